"""The sandbox service: what the ``microclaw.sandbox`` Celery tasks call, thinly.

Owns the per-group lifecycle on top of one backend: one warm container per group, started on
demand (``ensure``), reused by ``exec`` and the file operations, stopped on request or after
``idle_timeout_s`` (``stop_idle``, driven by beat), and every leftover of this instance removed
at worker boot (``cleanup_orphans``). It builds each container's spec from the mount policy
(``mounts.py``) and the egress policy (``egress.py``; it hosts the egress proxy in a thread),
validates every path, argv and env it is handed, and audits: ``sandbox.mount`` (each
extra-mount decision), ``sandbox.start``, ``sandbox.exec`` (group, tool, argv, duration,
exit status, timeout, output sizes, truncation), ``sandbox.stop``, ``sandbox.orphan``,
``sandbox.unavailable``, ``sandbox.denied``, and through the proxy ``egress.allow`` /
``egress.deny`` / ``egress.error``.

When the backend is unavailable every call raises ``SandboxUnavailable``: nothing ever runs
on the host. Does not: know about Celery, the store or settings (``audit`` is injected; the
lead wires it to the audit table), retry (callers decide from the error class), or authorize
*which* group may act (the caller passes the lease holder's group).

Thread-safe; meant to live once per sandbox worker process, which should run a single process
(``--pool threads`` or ``solo``) because the egress proxy of a group must be served by the
process that owns its container.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import posixpath
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from microclaw import safefs
from microclaw.errors import PolicyDenied, SandboxError, SandboxUnavailable, UnsafePath
from microclaw.sandbox.base import (
    GROUP_MOUNT,
    WORKSPACE,
    BaseSandboxBackend,
    ContainerGone,
    ContainerHandle,
    ContainerSpec,
    ExecRequest,
    ExecResult,
    SandboxConfig,
    validate_group_name,
)
from microclaw.sandbox.egress import EgressPolicy, EgressProxy, EgressProxyThread, ssl_context_for
from microclaw.sandbox.mounts import MountAllowlistCache, MountRequest, build_group_mounts

logger = logging.getLogger(__name__)

AuditFn = Callable[..., None]
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_AUDIT_ARGV_CHARS = 500

_LIST_SCRIPT = r"""
for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do
  if [ -e "$f" ] || [ -L "$f" ]; then stat -c '%F|%s|%Y|%n' -- "$f"; fi
done
"""
# $1 target, $2 bytes to write, $3 the group quota (0: the target is outside the group folder).
# du runs inside the container: the host never walks a folder the container can shape.
_WRITE_SCRIPT = r"""
if [ "$3" -gt 0 ]; then
  used=$(du -sk /workspace/group 2>/dev/null | cut -f1); used=$(( ${used:-0} * 1024 ))
  old=0; if [ -f "$1" ]; then old=$(stat -c %s -- "$1"); fi
  if [ $(( used - old + $2 )) -gt "$3" ]; then
    echo "the group folder quota of $3 bytes would be exceeded ($used bytes in use)" >&2; exit 75
  fi
fi
d=$(dirname -- "$1") && mkdir -p -- "$d" && cat > "$1"
"""
_QUOTA_EXCEEDED = 75
_KINDS = {
    "regular file": "file",
    "regular empty file": "file",
    "directory": "dir",
    "symbolic link": "symlink",
}


@dataclass(frozen=True)
class FileEntry:
    """One directory entry as seen inside the container."""

    name: str
    kind: str  # "file", "dir", "symlink" or "other"
    size: int
    mtime: int


@dataclass(frozen=True)
class FileContent:
    """A file read from the workspace; ``data`` is capped, ``size`` is what was there."""

    data: bytes
    truncated: bool
    size: int


def resolve_workspace_path(path: str, base: str = GROUP_MOUNT) -> str:
    """Map a tool-supplied path to an absolute path under ``/workspace`` or raise PolicyDenied.

    Relative paths are taken from ``/workspace/group``. Any ``..`` component, a NUL byte or
    a result outside ``/workspace`` is refused (symlinks resolve inside the container, where
    they can only reach what the container can see anyway).
    """
    if not isinstance(path, str) or not path or "\x00" in path or len(path) > 4096:
        raise PolicyDenied("sandbox.path", "path is empty or invalid")
    if ".." in path.split("/"):
        raise PolicyDenied("sandbox.path", f"'..' is not allowed in {path!r}")
    full = posixpath.normpath(path if path.startswith("/") else posixpath.join(base, path))
    full = "/" + full.lstrip("/")
    if full != WORKSPACE and not full.startswith(WORKSPACE + "/"):
        raise PolicyDenied("sandbox.path", f"{path!r} is outside {WORKSPACE}")
    return full


@dataclass
class _Group:
    handle: ContainerHandle
    spec: ContainerSpec
    extra: tuple[MountRequest, ...]
    last_used: float


class SandboxService:
    """See the module docstring. ``audit(kind, *, group, **data)`` must be thread-safe."""

    def __init__(
        self,
        backend: BaseSandboxBackend,
        config: SandboxConfig,
        audit: AuditFn,
        *,
        clock: Callable[[], float] = time.monotonic,
        egress: EgressProxyThread | None = None,
    ) -> None:
        self.backend = backend
        self.config = config
        self._audit = audit
        self._clock = clock
        self._groups: dict[str, _Group] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._allowlist = MountAllowlistCache(config.mount_allowlist_path)
        self._policy = EgressPolicy(
            config.network_allowlists, config.egress_credentials, config.egress_https_hosts
        )
        self._egress = egress
        self._egress_listening: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------

    def readiness(self) -> str | None:
        """None when tools can run, else why not (for ``microclaw-host status``)."""
        return self.backend.available()

    def ensure(
        self, group: str, *, is_main: bool = False, extra_mounts: Sequence[MountRequest] = ()
    ) -> ContainerHandle:
        """Start (or reuse) the group's container with this group's mounts and egress.

        Called before a group's first tool call of a run, with the lease holder's group and
        registration; cheap when the group is already warm in this process with the same
        registration (no engine round trip). Rejected extra mounts are skipped and audited,
        never fatal. Raises SandboxUnavailable when the backend cannot run containers,
        ValueError for an invalid group name, other SandboxError subclasses from the backend.
        """
        validate_group_name(group)
        extra = tuple(extra_mounts)
        with self._lock(group):
            state = self._groups.get(group)
            if state is not None and state.spec.is_main == is_main and state.extra == extra:
                # Warm in this process with the same registration: no engine round trip. A
                # container that died meanwhile is noticed by exec (ContainerGone) and replaced.
                state.last_used = self._clock()
                return dataclasses.replace(state.handle, created=False)
            return self._ensure_locked(group, is_main, extra)

    def _ensure_locked(self, group: str, is_main: bool, extra: tuple[MountRequest, ...]) -> ContainerHandle:
        reason = self.backend.available()
        if reason is not None:
            self._audit("sandbox.unavailable", group=group, reason=reason)
            raise SandboxUnavailable(reason, group=group)
        spec = self._build_spec(group, is_main, extra)
        if spec.egress_dir is not None:
            self._serve_egress(group, spec.egress_dir)  # the bind-mount source must exist first
        handle = self.backend.ensure(spec)
        self._groups[group] = _Group(handle, spec, extra, self._clock())
        if handle.created:
            self._audit(
                "sandbox.start",
                group=group,
                container=handle.name,
                is_main=is_main,
                mounts=[(m.container_path, "ro" if m.readonly else "rw") for m in spec.mounts],
                egress=spec.egress_dir is not None,
            )
        return handle

    def stop(self, group: str, *, reason: str = "requested") -> bool:
        """Stop and remove the group's container (its workspace stays); True when one ran."""
        validate_group_name(group)
        with self._lock(group):
            self._groups.pop(group, None)
            existed = self.backend.stop(group)
            if group in self._egress_listening and self._egress is not None:
                self._egress.close_group(group)
                self._egress_listening.discard(group)
        if existed:
            self._audit("sandbox.stop", group=group, reason=reason)
        return existed

    def stop_idle(self, now: float | None = None) -> list[str]:
        """Stop every container unused for ``idle_timeout_s``; returns the groups stopped."""
        now = self._clock() if now is None else now
        idle = [g for g, st in list(self._groups.items()) if now - st.last_used >= self.config.idle_timeout_s]
        for group in idle:
            self.stop(group, reason="idle")
        return idle

    def cleanup_orphans(self) -> list[str]:
        """At worker boot: remove every container of this instance left by a previous process."""
        names = self.backend.cleanup_orphans()
        for name in names:
            self._audit("sandbox.orphan", group=None, container=name)
        self._groups.clear()
        shutil.rmtree(self._run_dir() / "e", ignore_errors=True)
        if names:
            logger.info("removed %d orphaned sandbox containers", len(names))
        return names

    def close(self) -> None:
        """Stop the egress proxy and release the backend client (containers keep running)."""
        if self._egress is not None:
            self._egress.close()
            self._egress = None
            self._egress_listening.clear()
        self.backend.close()

    # -- tools ----------------------------------------------------------------------------

    def exec(
        self,
        group: str,
        argv: Sequence[str],
        *,
        stdin: bytes = b"",
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
        tool: str | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the group's container; output capped at ``max_output_bytes``.

        Starts the container when it is not warm (with the last ``ensure`` parameters seen in
        this process, else as a non-main group without extra mounts: call ``ensure`` first).
        The command's failures are in the result (``exit_code``, ``timed_out``,
        ``truncated``); raises PolicyDenied for bad argv/env/workdir, SandboxUnavailable,
        TransientSandboxError or PermanentSandboxError for sandbox faults.
        """
        request = self._request(group, argv, stdin, env, workdir, timeout, self.config.max_output_bytes)
        return self._run(group, request, tool=tool or "exec")

    def read_file(self, group: str, path: str, *, max_bytes: int | None = None) -> FileContent:
        """Read a workspace file (capped at ``max_bytes`` or ``max_file_bytes``)."""
        target = self._path(group, path)
        cap = min(max_bytes or self.config.max_file_bytes, self.config.max_file_bytes)
        request = self._request(group, ["cat", "--", target], b"", None, None, None, cap)
        result = self._run(group, request, tool="read_file")
        if not result.ok:
            raise SandboxError(f"read_file {path}: {result.stderr_text.strip()[:300]}", group=group)
        return FileContent(result.stdout, result.stdout_bytes > len(result.stdout), result.stdout_bytes)

    def write_file(self, group: str, path: str, data: bytes) -> int:
        """Create or replace a workspace file (parents created); returns the bytes written.

        Raises PolicyDenied (audited ``sandbox.denied``) when ``data`` is larger than
        ``max_file_bytes`` or would take the group folder past ``group_quota``.
        """
        target = self._path(group, path)
        if len(data) > self.config.max_file_bytes:
            self._deny(group, "sandbox.write_file", f"file larger than {self.config.max_file_bytes} bytes")
        quota = self.config.group_quota_bytes if target.startswith(GROUP_MOUNT + "/") else 0
        argv = ["sh", "-c", _WRITE_SCRIPT, "sh", target, str(len(data)), str(quota)]
        request = self._request(group, argv, data, None, None, None, 4096)
        result = self._run(group, request, tool="write_file")
        if result.exit_code == _QUOTA_EXCEEDED:
            self._deny(group, "sandbox.write_file", result.stderr_text.strip()[:300])
        if not result.ok:
            raise SandboxError(f"write_file {path}: {result.stderr_text.strip()[:300]}", group=group)
        return len(data)

    def list_files(self, group: str, path: str = ".") -> list[FileEntry]:
        """List a workspace directory (names, kinds, sizes, mtimes), sorted by name."""
        target = self._path(group, path)
        cap = self.config.max_output_bytes
        request = self._request(group, ["sh", "-c", _LIST_SCRIPT, "sh", target], b"", None, None, None, cap)
        result = self._run(group, request, tool="list_files")
        if not result.ok:
            raise SandboxError(f"list_files {path}: {result.stderr_text.strip()[:300]}", group=group)
        entries = []
        for line in result.stdout_text.splitlines():
            kind, size, mtime, name = ([*line.split("|", 3), "", "", "", ""])[:4]
            if not name:
                continue
            entries.append(
                FileEntry(
                    posixpath.basename(name),
                    _KINDS.get(kind, "other"),
                    int(size) if size.isdigit() else 0,
                    int(mtime) if mtime.isdigit() else 0,
                )
            )
        return sorted(entries, key=lambda e: e.name)

    # -- internals ------------------------------------------------------------------------

    def _lock(self, group: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(group, threading.Lock())

    def _run_dir(self) -> Path:
        return self.config.run_dir.expanduser().absolute()

    def _deny(self, group: str | None, action: str, reason: str) -> None:
        self._audit("sandbox.denied", group=group, action=action, reason=reason)
        raise PolicyDenied(action, reason, group=group)

    def _path(self, group: str, path: str) -> str:
        try:
            return resolve_workspace_path(path)
        except PolicyDenied as exc:
            self._deny(group, exc.action, exc.reason)
            raise  # unreachable: _deny raises

    def _request(self, group, argv, stdin, env, workdir, timeout, cap) -> ExecRequest:
        validate_group_name(group)
        if isinstance(argv, str) or not argv or not all(isinstance(a, str) and "\x00" not in a for a in argv):
            self._deny(group, "sandbox.exec", "argv must be a non-empty list of strings without NUL")
        if not isinstance(stdin, bytes | bytearray):
            self._deny(group, "sandbox.exec", "stdin must be bytes")
        clean_env: dict[str, str] = {}
        for key, value in (env or {}).items():
            if not _ENV_KEY_RE.fullmatch(str(key)) or not isinstance(value, str) or "\x00" in value:
                self._deny(group, "sandbox.exec", f"invalid environment variable {key!r}")
            clean_env[key] = value
        if workdir is None:
            wd = GROUP_MOUNT
        elif not isinstance(workdir, str) or "\x00" in workdir or ".." in workdir.split("/"):
            self._deny(group, "sandbox.exec", "invalid workdir")
        else:
            wd = posixpath.normpath(
                workdir if workdir.startswith("/") else posixpath.join(GROUP_MOUNT, workdir)
            )
        limit = self.config.exec_timeout_s if timeout is None else float(timeout)
        limit = max(0.1, min(limit, self.config.max_exec_timeout_s))
        return ExecRequest(tuple(argv), bytes(stdin), clean_env, wd, limit, cap)

    def _warm(self, group: str) -> ContainerHandle:
        state = self._groups.get(group)
        if state is not None:
            return state.handle
        with self._lock(group):
            state = self._groups.get(group)
            if state is not None:
                return state.handle
            return self._ensure_locked(group, False, ())

    def _run(self, group: str, request: ExecRequest, *, tool: str) -> ExecResult:
        handle = self._warm(group)
        started = time.monotonic()
        try:
            try:
                result = self.backend.exec(handle, request)
            except ContainerGone:
                logger.info("container of %s is gone; starting a new one", group, extra={"group": group})
                with self._lock(group):
                    state = self._groups.pop(group, None)
                    is_main, extra = (state.spec.is_main, state.extra) if state else (False, ())
                    handle = self._ensure_locked(group, is_main, extra)
                result = self.backend.exec(handle, request)
        except SandboxError as exc:
            self._audit(
                "sandbox.exec",
                group=group,
                tool=tool,
                argv=_audit_argv(request.argv),
                error=f"{type(exc).__name__}: {exc}",
                duration_ms=int((time.monotonic() - started) * 1000),
            )
            raise
        state = self._groups.get(group)
        if state is not None:
            state.last_used = self._clock()
        self._audit(
            "sandbox.exec",
            group=group,
            tool=tool,
            argv=_audit_argv(request.argv),
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            truncated=result.truncated,
            duration_ms=result.duration_ms,
            stdout_bytes=result.stdout_bytes,
            stderr_bytes=result.stderr_bytes,
        )
        return result

    def _build_spec(self, group: str, is_main: bool, extra: tuple[MountRequest, ...]) -> ContainerSpec:
        groups_dir = self.config.groups_dir.expanduser().absolute()
        folder = groups_dir / group
        try:  # never created (or chowned below) through a link planted in its place
            safefs.ensure_dir(groups_dir, [group])
        except UnsafePath as exc:
            self._deny(group, "sandbox.mount", exc.reason)
        self._make_writable(folder)
        global_dir = self.config.global_dir
        if is_main and global_dir is not None and global_dir.is_dir():
            self._make_writable(global_dir)
        allowlist = self._allowlist.get() if extra else None
        built = build_group_mounts(
            group,
            is_main=is_main,
            groups_dir=groups_dir,
            global_dir=global_dir,
            extra=extra,
            allowlist=allowlist,
        )
        for decision in built.decisions:
            self._audit(
                "sandbox.mount",
                group=group,
                allowed=decision.allowed,
                reason=decision.reason,
                host_path=decision.host_path,
                container_path=decision.target,
                readonly=decision.readonly,
            )
            if not decision.allowed:
                logger.warning("mount refused for %s: %s", group, decision.reason, extra={"group": group})
        egress_dir = None
        if self._policy.has_egress(group):
            key = hashlib.sha256(f"{self.config.instance}/{group}".encode()).hexdigest()[:12]
            egress_dir = self._run_dir() / "e" / key
        return ContainerSpec(group, is_main, built.mounts, egress_dir)

    def _make_writable(self, path: Path) -> None:
        """The container user must be able to write its rw folders."""
        uid, gid = self.config.uid_gid
        st = path.stat()
        if st.st_uid == uid:
            return
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
        elif not os.access(path, os.W_OK):
            logger.warning("%s is not writable by the sandbox user %s", path, self.config.user)

    def _serve_egress(self, group: str, egress_dir: Path) -> None:
        if group in self._egress_listening:
            return
        if self._egress is None:
            proxy = EgressProxy(
                self._policy,
                self._audit,
                connect_timeout_s=self.config.egress_connect_timeout_s,
                idle_timeout_s=self.config.egress_idle_timeout_s,
                max_connections=self.config.egress_max_connections,
                max_connections_per_group=self.config.egress_max_connections_per_group,
                ssl_context=ssl_context_for(self.config.egress_ca_file),
            )
            self._egress = EgressProxyThread(proxy)
        egress_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(egress_dir.parent.parent, 0o700)  # run_dir: no other host user gets in
        os.chmod(egress_dir, 0o755)
        self._egress.listen_unix(group, egress_dir / "proxy.sock")
        self._egress_listening.add(group)


def _audit_argv(argv: Sequence[str]) -> str:
    text = " ".join(argv)
    return text if len(text) <= _AUDIT_ARGV_CHARS else text[:_AUDIT_ARGV_CHARS] + "…"
