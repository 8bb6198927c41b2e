"""The in-container executor and its wire protocol (runs INSIDE the sandbox container).

This file is bind-mounted read-only into every Docker sandbox container at
``/opt/microclaw/executor.py`` and started as the container's main process (under
docker-init) with ``python3 -I -S``. It therefore imports nothing but the standard library
(and only modules that Debian's ``python3.11-minimal`` ships), and must keep working on the
image's Python, not the host's.

It owns:
- ``serve``: a Unix socket server on a host-mounted directory; one connection carries one
  exec request and its response. This is the warm-exec fast path: no ``docker exec`` (whose
  runc round trip costs ~60 ms on this engine) per tool call.
- ``once``: the same request/response over stdin/stdout, for ``docker exec`` fallback.
- the egress relay: when asked, a loopback TCP listener (``127.0.0.1:3128``) that pipes every
  connection to the host's egress proxy socket mounted at ``/run/microclaw/egress``. The
  container has network mode ``none``; this relay is its only way out, and the host proxy
  decides what passes. The relay holds no secret and makes no decision.
- the protocol codecs (``encode_request``/``read_request``/``encode_response``/
  ``read_response``), which the host imports from this same module.

Each command runs in its own session with stdout and stderr captured up to a cap (the total
sizes are still reported), and a wall-clock timeout enforced here, inside the container. A
timeout kills the command's whole process tree, not just its process group: ``setsid`` (or a
double fork) escapes a group and a session, so `kill_exec_tree` sweeps, until nothing is left,
every process that is (a) a descendant of the command (the command is made a child
subreaper when ``ctypes`` is there, so orphans of its subtree stay under it while it lives),
(b) in its session or process group, or (c) carries the exec's ``MICROCLAW_EXEC_ID`` mark in
its environment (which ``setsid`` and daemonizing keep; only a process that clears its own
environment *and* escapes a subreaper-less tree gets away, see docs/security.md). A
command that exits on its own may leave background processes running, as before: they end
with the container.

It does not decide policy, hold credentials, or trust its caller beyond the container: anyone
who can reach it is already inside the sandbox. It does not log either (no ``logging``, no
module logger): its only output channel is the protocol, and the host logs and audits.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

REQUEST_MAGIC = b"MCX1"
RESPONSE_MAGIC = b"MCR1"
_REQ_FIXED = struct.Struct(">QQQ")  # timeout_ms, max_output, stdin_len
_RES_FIXED = struct.Struct(">iBBBQQQQQ")  # exit, timed_out, out_trunc, err_trunc, ms, tot*2, len*2
MAX_FIELD_BYTES = 4 * 1024 * 1024
MAX_FIELDS = 65536
MAX_STDIN_BYTES = 256 * 1024 * 1024
KILL_GRACE_S = 0.25  # after the main process exits, how long to drain background writers
EXEC_MARK = "MICROCLAW_EXEC_ID"
KILL_ROUNDS = 200
_CHUNK = 65536
_PR_SET_CHILD_SUBREAPER = 36


class ProtocolError(Exception):
    """The peer sent something that is not a well-formed frame."""


class Request:
    """One command to run: argv, extra env, cwd, timeout, output cap, stdin bytes."""

    # A plain class: Debian's python3-minimal has no ``dataclasses``.
    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: str = "",
        timeout_ms: int = 60_000,
        max_output: int = 1_000_000,
        stdin: bytes = b"",
    ) -> None:
        self.argv = argv
        self.env = env or {}
        self.cwd = cwd
        self.timeout_ms = timeout_ms
        self.max_output = max_output
        self.stdin = stdin


class Response:
    """What happened: exit code (128+N for signal N), flags, durations and capped output."""

    def __init__(
        self,
        exit_code: int,
        timed_out: bool = False,
        stdout: bytes = b"",
        stderr: bytes = b"",
        stdout_total: int | None = None,
        stderr_total: int | None = None,
        stdout_truncated: bool = False,
        stderr_truncated: bool = False,
        duration_ms: int = 0,
    ) -> None:
        self.exit_code = exit_code
        self.timed_out = timed_out
        self.stdout = stdout
        self.stderr = stderr
        self.stdout_total = len(stdout) if stdout_total is None else stdout_total
        self.stderr_total = len(stderr) if stderr_total is None else stderr_total
        self.stdout_truncated = stdout_truncated
        self.stderr_truncated = stderr_truncated
        self.duration_ms = duration_ms

    def __repr__(self) -> str:
        return f"Response(exit_code={self.exit_code}, timed_out={self.timed_out}, out={len(self.stdout)}B)"


# ---------------------------------------------------------------------------- codecs


def _pack_strs(items: list[str]) -> bytes:
    out = [struct.pack(">I", len(items))]
    for item in items:
        raw = item.encode("utf-8", "surrogateescape")
        out.append(struct.pack(">I", len(raw)))
        out.append(raw)
    return b"".join(out)


def encode_request(req: Request) -> bytes:
    """Serialize a request (header and stdin) into one frame."""
    env_flat: list[str] = []
    for key, value in req.env.items():
        env_flat.extend((key, value))
    return b"".join(
        (
            REQUEST_MAGIC,
            _REQ_FIXED.pack(max(0, int(req.timeout_ms)), max(0, int(req.max_output)), len(req.stdin)),
            _pack_strs(list(req.argv)),
            _pack_strs(env_flat),
            _pack_strs([req.cwd]),
            req.stdin,
        )
    )


def _read_strs(read_exact) -> list[str]:
    (count,) = struct.unpack(">I", read_exact(4))
    if count > MAX_FIELDS:
        raise ProtocolError("too many fields")
    items = []
    for _ in range(count):
        (size,) = struct.unpack(">I", read_exact(4))
        if size > MAX_FIELD_BYTES:
            raise ProtocolError("field too large")
        items.append(read_exact(size).decode("utf-8", "surrogateescape"))
    return items


def read_request(read_exact) -> Request:
    """Parse a request frame with ``read_exact(n) -> bytes`` (exactly n bytes or raise)."""
    if read_exact(4) != REQUEST_MAGIC:
        raise ProtocolError("bad request magic")
    timeout_ms, max_output, stdin_len = _REQ_FIXED.unpack(read_exact(_REQ_FIXED.size))
    if stdin_len > MAX_STDIN_BYTES:
        raise ProtocolError("stdin too large")
    argv = _read_strs(read_exact)
    env_flat = _read_strs(read_exact)
    cwd_list = _read_strs(read_exact)
    if not argv or len(env_flat) % 2 or len(cwd_list) != 1:
        raise ProtocolError("malformed request")
    env = dict(zip(env_flat[0::2], env_flat[1::2], strict=True))
    stdin = read_exact(stdin_len) if stdin_len else b""
    return Request(argv, env, cwd_list[0], timeout_ms, max_output, stdin)


def encode_response(res: Response) -> bytes:
    """Serialize a response into one frame."""
    return b"".join(
        (
            RESPONSE_MAGIC,
            _RES_FIXED.pack(
                int(res.exit_code),
                int(res.timed_out),
                int(res.stdout_truncated),
                int(res.stderr_truncated),
                max(0, int(res.duration_ms)),
                res.stdout_total,
                res.stderr_total,
                len(res.stdout),
                len(res.stderr),
            ),
            res.stdout,
            res.stderr,
        )
    )


def read_response(read_exact, max_output: int) -> Response:
    """Parse a response frame; refuse one carrying more than ``max_output`` bytes per stream."""
    if read_exact(4) != RESPONSE_MAGIC:
        raise ProtocolError("bad response magic")
    fields = _RES_FIXED.unpack(read_exact(_RES_FIXED.size))
    exit_code, timed_out, out_trunc, err_trunc, ms, out_total, err_total, out_len, err_len = fields
    if out_len > max_output or err_len > max_output:
        raise ProtocolError("response exceeds the output cap")
    stdout = read_exact(out_len) if out_len else b""
    stderr = read_exact(err_len) if err_len else b""
    return Response(
        exit_code=exit_code,
        timed_out=bool(timed_out),
        stdout=stdout,
        stderr=stderr,
        stdout_total=out_total,
        stderr_total=err_total,
        stdout_truncated=bool(out_trunc),
        stderr_truncated=bool(err_trunc),
        duration_ms=ms,
    )


def socket_reader(sock: socket.socket):
    """Return a ``read_exact`` over a socket (raises ProtocolError on early EOF)."""

    def read_exact(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise ProtocolError("connection closed mid-frame")
            buf += chunk
        return bytes(buf)

    return read_exact


def _stream_reader(stream):
    def read_exact(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = stream.read(n - len(buf))
            if not chunk:
                raise ProtocolError("stream closed mid-frame")
            buf += chunk
        return bytes(buf)

    return read_exact


# ---------------------------------------------------------------------------- running


def _feed_stdin(pipe, data: bytes) -> None:
    try:
        if data:
            pipe.write(data)
    except (BrokenPipeError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def _child_preexec():
    """What a command runs before exec: it volunteers first for the OOM killer, and it becomes a
    child subreaper when ctypes is there.

    The OOM preference keeps the executor alive when a command exhausts the container's memory
    (a process may always raise its own ``oom_score_adj``; the command's children inherit it).
    Debian's python3-minimal has no ctypes; there the tree walk, session and mark still apply.
    """
    prctl = None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        prctl = None

    def preexec() -> None:
        try:
            with open("/proc/self/oom_score_adj", "w") as handle:
                handle.write("1000")
        except OSError:
            pass
        if prctl is not None:
            prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    return preexec


_PREEXEC = _child_preexec() if sys.platform.startswith("linux") else None


def _proc_table() -> dict:
    """pid -> (ppid, pgid, sid, state) for every process visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold ") "
        if len(fields) >= 4:
            table[int(name)] = (int(fields[1]), int(fields[2]), int(fields[3]), fields[0])
    return table


def _marked(pid: int, mark: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return mark in f.read().split(b"\0")
    except OSError:
        return False


def kill_exec_tree(root: int, mark: str) -> int:
    """SIGKILL every process of one exec (see the module docstring); returns how many.

    ``root`` must not have been reaped yet (its pid, and so its session id, cannot be reused
    meanwhile). Descendants go first while ``root`` lives, so a subreaper root still collects
    the orphans its dying children leave; rounds repeat until a scan finds nothing alive.
    """
    never = {os.getpid(), 1}
    mark_bytes = f"{EXEC_MARK}={mark}".encode()
    killed: set = set()
    # Frozen first, so the command cannot react to its children dying (print, exit 0, respawn);
    # a stopped subreaper still collects orphans.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(root, signal.SIGSTOP)
    for _ in range(KILL_ROUNDS):
        table = _proc_table()
        children: dict = {}
        for pid, (ppid, _pgid, _sid, _state) in table.items():
            children.setdefault(ppid, []).append(pid)
        victims = set()
        stack = [root]
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in victims:
                    victims.add(child)
                    stack.append(child)
        for pid, (_ppid, pgid, sid, _state) in table.items():
            if root in (pgid, sid) or _marked(pid, mark_bytes):
                victims.add(pid)
        victims -= never | {root}
        alive = [pid for pid in victims if table.get(pid, (0, 0, 0, "Z"))[3] not in "ZXx"]
        if not alive:
            root_state = table.get(root, (0, 0, 0, "Z"))[3]
            if root_state in "ZXx" or root in killed:
                break
            alive = [root]  # the subtree is empty: now the root itself
        for sig in (signal.SIGSTOP, signal.SIGKILL):  # none of them forks while others die
            for pid in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        killed.update(alive)
    return len(killed)


def run_request(req: Request) -> Response:
    """Run one command to completion, timeout or cap; never raises for the command's faults."""
    start = time.monotonic()
    if req.cwd and not os.path.isdir(req.cwd):
        return Response(126, stderr=f"microclaw: workdir {req.cwd} does not exist\n".encode())
    env = dict(os.environ)
    env.update(req.env)
    mark = os.urandom(8).hex()
    env[EXEC_MARK] = mark
    try:
        proc = subprocess.Popen(
            req.argv,
            stdin=subprocess.PIPE if req.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=req.cwd or None,
            env=env,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_PREEXEC,
        )
    except FileNotFoundError:
        return Response(127, stderr=f"microclaw: {req.argv[0]}: command not found\n".encode())
    except OSError as exc:  # EACCES, ENOEXEC, EAGAIN (pids limit) ...
        return Response(126, stderr=f"microclaw: cannot run {req.argv[0]}: {exc}\n".encode())

    if req.stdin:
        threading.Thread(target=_feed_stdin, args=(proc.stdin, req.stdin), daemon=True).start()
    cap = max(0, req.max_output)
    assert proc.stdout is not None and proc.stderr is not None  # both are PIPEs
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    totals = dict.fromkeys(bufs, 0)
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    deadline = start + max(req.timeout_ms, 1) / 1000.0
    timed_out = False
    stop_at: float | None = None
    while sel.get_map():
        now = time.monotonic()
        if stop_at is None:
            if proc.poll() is not None:
                stop_at = now + KILL_GRACE_S
            elif now >= deadline:
                timed_out = True
                kill_exec_tree(proc.pid, mark)
                stop_at = now + KILL_GRACE_S
        elif now >= stop_at:
            break
        for key, _ in sel.select(0.05):
            try:
                chunk = os.read(key.fd, _CHUNK)
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(key.fd)
                continue
            totals[key.fd] += len(chunk)
            room = cap - len(bufs[key.fd])
            if room > 0:
                bufs[key.fd] += chunk[:room]
    sel.close()
    proc.stdout.close()
    proc.stderr.close()
    # Both pipes can close while the process lives on (it closed them itself): the deadline
    # still holds.
    try:
        rc = proc.wait(timeout=max(0.0, deadline - time.monotonic()) if not timed_out else 5)
    except subprocess.TimeoutExpired:
        if not timed_out:
            timed_out = True
            kill_exec_tree(proc.pid, mark)
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = -signal.SIGKILL
    return Response(
        exit_code=128 - rc if rc < 0 else rc,
        timed_out=timed_out,
        stdout=bytes(bufs[out_fd]),
        stderr=bytes(bufs[err_fd]),
        stdout_total=totals[out_fd],
        stderr_total=totals[err_fd],
        stdout_truncated=totals[out_fd] > cap,
        stderr_truncated=totals[err_fd] > cap,
        duration_ms=int((time.monotonic() - start) * 1000),
    )


# ---------------------------------------------------------------------------- serving


def _handle_conn(conn: socket.socket) -> None:
    with conn:
        try:
            req = read_request(socket_reader(conn))
        except (ProtocolError, OSError, struct.error, UnicodeError):
            return
        res = run_request(req)
        with contextlib.suppress(OSError):
            conn.sendall(encode_response(res))


def _spawn(target, *args) -> bool:
    try:
        threading.Thread(target=target, args=args, daemon=True).start()
        return True
    except RuntimeError:  # pids limit reached: no thread can start right now
        return False


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until both directions reach EOF (half-close aware)."""
    sel = selectors.DefaultSelector()
    peers = {a.fileno(): b, b.fileno(): a}
    socks = {a.fileno(): a, b.fileno(): b}
    for fd in socks:
        sel.register(fd, selectors.EVENT_READ)
    try:
        while sel.get_map():
            for key, _ in sel.select(None):
                try:
                    chunk = socks[key.fd].recv(_CHUNK)
                except OSError:
                    chunk = b""
                if chunk:
                    try:
                        peers[key.fd].sendall(chunk)
                        continue
                    except OSError:
                        return
                sel.unregister(key.fd)
                with contextlib.suppress(OSError):
                    peers[key.fd].shutdown(socket.SHUT_WR)
    finally:
        sel.close()
        a.close()
        b.close()


def _relay_conn(client: socket.socket, target: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(target)
    except OSError:
        upstream.close()
        try:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        finally:
            client.close()
        return
    _pump(client, upstream)


def _relay_serve(listen: str, target: str) -> None:
    host, _, port = listen.rpartition(":")
    srv = socket.create_server((host, int(port)), backlog=128)
    while True:
        client, _ = srv.accept()
        if not _spawn(_relay_conn, client, target):
            client.close()


def serve(socket_path: str, egress_listen: str | None = None, egress_socket: str | None = None) -> None:
    """Accept exec requests on ``socket_path`` forever; optionally run the egress relay."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if egress_listen and egress_socket:
        threading.Thread(target=_relay_serve, args=(egress_listen, egress_socket), daemon=True).start()
    tmp = socket_path + ".new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(tmp)
    os.chmod(tmp, 0o666)
    srv.listen(64)
    os.replace(tmp, socket_path)  # appears atomically: the host polls for it
    while True:
        conn, _ = srv.accept()
        if not _spawn(_handle_conn, conn):
            conn.close()


def once() -> int:
    """Read one request from stdin, write its response to stdout (docker exec transport)."""
    try:
        req = read_request(_stream_reader(sys.stdin.buffer))
    except (ProtocolError, struct.error, UnicodeError) as exc:
        sys.stderr.write(f"microclaw executor: {exc}\n")
        return 2
    sys.stdout.buffer.write(encode_response(run_request(req)))
    sys.stdout.buffer.flush()
    return 0


def main(argv: list[str]) -> int:
    """``serve SOCKET [EGRESS_LISTEN EGRESS_SOCKET]`` or ``once``."""
    if argv[:1] == ["serve"] and len(argv) in (2, 4):
        serve(argv[1], *(argv[2:4] or (None, None)))
        return 0
    if argv == ["once"]:
        return once()
    sys.stderr.write("usage: executor.py serve SOCKET [EGRESS_LISTEN EGRESS_SOCKET] | once\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
