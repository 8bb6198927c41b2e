"""The egress proxy: the only way out of a sandbox container, deny by default.

Topology (measured on Docker 20.10 / cgroup v1 / fuse-overlayfs, see tests/integration/sandbox):
every container runs with network mode ``none``. A group with an allowlist gets a host
directory mounted read-only at ``/run/microclaw/egress`` holding this proxy's Unix socket
(one socket per group, so the socket a connection arrives on *is* the group's identity), and
the in-container executor relays ``127.0.0.1:3128`` to it. ``HTTP_PROXY``/``HTTPS_PROXY``
point there. We first tried the obvious ``--internal`` bridge network with a host listener on
its gateway: an internal network only drops *forwarded* traffic, so the container could still
reach every host service bound to ``0.0.0.0`` through the gateway address and even the host's
other addresses (verified with a host HTTP server); closing that needs root and iptables
rules on the host. With network ``none`` the container has no interface but loopback, so there
is nothing to firewall.

Protocol:
- plain HTTP forward proxy (absolute-form ``GET http://host[:port]/path``): the proxy opens the
  upstream connection itself, so it can add credential headers. Hosts in
  ``egress_https_hosts`` are reached over TLS (port 443 unless the URL names one) although
  the container speaks plain HTTP to the proxy: that is how a container calls an HTTPS API
  with a key it never sees. TLS inside a CONNECT tunnel is end-to-end, so nothing can be
  injected there: design credential hosts as ``http://api.example.com/...`` + an
  ``egress_https_hosts`` entry.
- ``CONNECT host:port``: a byte tunnel after the policy check, no injection.

The allowlist is checked against the *upstream* destination (host, port): for an upgraded
host that is port 443. Every decision is audited (``egress.allow`` / ``egress.deny`` /
``egress.error``) with group, host, port and method; injected header *names* are recorded,
values never are (not in logs, audit rows, errors or reprs).

Does not: resolve names for the container (it never needs DNS), cache, authenticate the
container (identity is the socket), or keep connections alive (one request per connection,
``Connection: close`` both ways). Hostnames are resolved on the host when connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from microclaw.errors import ConfigError

logger = logging.getLogger(__name__)

AuditFn = Callable[..., None]
MAX_HEAD_BYTES = 64 * 1024
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
}


@dataclass(frozen=True)
class Destination:
    """One allowlist entry: exact host or ``*.suffix``, a port or any port (None)."""

    host: str
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        """True when (host, port) is covered by this entry."""
        if self.port is not None and self.port != port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and host != self.host[2:]
        return host == self.host


def normalize_host(host: str) -> str:
    """Lowercase, no trailing dot, no IPv6 brackets."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def parse_destinations(entries: tuple[str, ...] | list[str]) -> tuple[Destination, ...]:
    """``"host:port"``, ``"host:*"``, ``"host"`` (80 and 443), ``"*.example.com:443"``.

    Raises ConfigError naming the bad entry.
    """
    out: list[Destination] = []
    for entry in entries:
        text = entry.strip()
        port: str | None = None
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
        elif text.count(":") == 1:
            host, port = text.split(":")
        else:
            host = text  # a bare name, or a bare IPv6 address
        host = normalize_host(host)
        if not host or any(c in host for c in "/@ ") or ("*" in host and not host.startswith("*.")):
            raise ConfigError(f"invalid egress allowlist entry {entry!r}", key="sandbox.network_allowlists")
        if port is None:
            out.extend((Destination(host, 80), Destination(host, 443)))
        elif port == "*":
            out.append(Destination(host, None))
        elif port.isdigit() and 0 < int(port) < 65536:
            out.append(Destination(host, int(port)))
        else:
            raise ConfigError(f"invalid port in egress entry {entry!r}", key="sandbox.network_allowlists")
    return tuple(out)


class EgressPolicy:
    """Per-group allowlists, credential headers and TLS-upgrade hosts (pure lookups)."""

    def __init__(
        self,
        allowlists: Mapping[str, tuple[str, ...]],
        credentials: Mapping[str, Mapping[str, str]] | None = None,
        https_hosts: Iterable[str] = (),
    ) -> None:
        self._allow = {group: parse_destinations(tuple(entries)) for group, entries in allowlists.items()}
        self._credentials = credentials or {}
        self._https = frozenset(normalize_host(h) for h in https_hosts)

    def allows(self, group: str, host: str, port: int) -> bool:
        """True when ``group`` may reach (host, port)."""
        host = normalize_host(host)
        return any(d.matches(host, port) for d in self._allow.get(group, ()))

    def has_egress(self, group: str) -> bool:
        """True when the group has any allowlist entry at all."""
        return bool(self._allow.get(group))

    def upgrade_to_tls(self, host: str) -> bool:
        """True when plain-HTTP requests for ``host`` go upstream over TLS."""
        return normalize_host(host) in self._https

    def headers_for(self, host: str) -> Mapping[str, str]:
        """Credential headers to inject for ``host`` (empty when none)."""
        return self._credentials.get(normalize_host(host), {})


class _HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _response(status: int, reason: str, body: str = "") -> bytes:
    payload = (body or f"{status} {reason}\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + payload


def _split_target(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = authority.partition(":")
    if port and not port.isdigit():
        raise _HttpError(400, "Bad Request")
    port_num = int(port) if port else default_port
    if not host or not 0 < port_num < 65536:
        raise _HttpError(400, "Bad Request")
    return normalize_host(host), port_num


class EgressProxy:
    """The asyncio proxy server. All methods run on its event loop.

    ``audit(kind, *, group, **data)`` is called from the loop thread for every decision; it
    must be thread-safe and quick.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        audit: AuditFn,
        *,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 300.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self._audit = audit
        self._connect_timeout = connect_timeout_s
        self._idle_timeout = idle_timeout_s
        self._ssl = ssl_context or ssl.create_default_context()
        self._servers: dict[str, list[asyncio.AbstractServer]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def listen_unix(self, group: str, path: Path) -> None:
        """Serve ``group`` on a Unix socket at ``path`` (replacing a stale one)."""
        await self.close_group(group)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        server = await asyncio.start_unix_server(
            lambda r, w: self._handle(group, r, w), path=str(path), limit=MAX_HEAD_BYTES
        )
        os.chmod(path, 0o666)  # the container user connects; the parent dir guards the host side
        self._servers.setdefault(group, []).append(server)
        logger.info("egress proxy listening for %s", group, extra={"group": group})

    async def listen_tcp(self, group: str, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Serve ``group`` on a TCP address (tests and non-Docker runtimes); returns it."""
        server = await asyncio.start_server(
            lambda r, w: self._handle(group, r, w), host=host, port=port, limit=MAX_HEAD_BYTES
        )
        self._servers.setdefault(group, []).append(server)
        sockname = server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def close_group(self, group: str) -> None:
        """Stop accepting for ``group``; open tunnels finish on their own."""
        for server in self._servers.pop(group, []):
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def aclose(self) -> None:
        """Stop every listener and cancel live connections."""
        for group in list(self._servers):
            await self.close_group(group)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- connection handling --------------------------------------------------------------

    async def _handle(self, group: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve_one(group, reader, writer)
        except _HttpError as exc:
            with contextlib.suppress(Exception):
                writer.write(_response(exc.status, exc.reason))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except Exception:
            logger.exception("egress proxy connection failed", extra={"group": group})
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _serve_one(
        self, group: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        except asyncio.LimitOverrunError as exc:
            raise _HttpError(431, "Request Header Fields Too Large") from exc
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _HttpError(400, "Bad Request")
        method, target, version = parts
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _HttpError(400, "Bad Request")
            headers.append((name, value.strip()))
        if method.upper() == "CONNECT":
            await self._connect(group, target, reader, writer)
        else:
            await self._forward(group, method, target, version, headers, reader, writer)

    def _decide(self, group: str, method: str, host: str, port: int, **extra: Any) -> None:
        if self.policy.allows(group, host, port):
            self._audit("egress.allow", group=group, host=host, port=port, method=method, **extra)
            logger.info("egress allow %s -> %s:%s", group, host, port, extra={"group": group})
            return
        self._audit("egress.deny", group=group, host=host, port=port, method=method)
        logger.info("egress deny %s -> %s:%s", group, host, port, extra={"group": group})
        raise _HttpError(403, "Forbidden")

    async def _open(self, group: str, host: str, port: int, tls: bool):
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=self._ssl if tls else None, server_hostname=host if tls else None
                ),
                timeout=self._connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._audit("egress.error", group=group, host=host, port=port, error=type(exc).__name__)
            raise _HttpError(502, "Bad Gateway") from exc

    async def _connect(self, group: str, target: str, reader, writer) -> None:
        host, port = _split_target(target, 443)
        self._decide(group, "CONNECT", host, port, tunnel=True)
        up_reader, up_writer = await self._open(group, host, port, tls=False)
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        await self._pipe(reader, writer, up_reader, up_writer)

    async def _forward(self, group, method, target, version, headers, reader, writer) -> None:
        url = urlsplit(target)
        if url.scheme.lower() != "http" or not url.netloc or "@" in url.netloc:
            raise _HttpError(400, "Bad Request")
        host, _ = _split_target(url.netloc, 80)
        tls = self.policy.upgrade_to_tls(host)
        explicit_port = url.port
        port = explicit_port or (443 if tls else 80)
        inject = self.policy.headers_for(host)
        self._decide(
            group, method.upper(), host, port, tls=tls, credential_headers=sorted(inject) if inject else []
        )
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        drop = {name.lower() for name in inject} | _HOP_BY_HOP
        out = [f"{method} {path} {version}"]
        out += [f"{name}: {value}" for name, value in headers if name.lower() not in drop]
        out += [f"{name}: {value}" for name, value in inject.items()]
        out.append("Connection: close")
        up_reader, up_writer = await self._open(group, host, port, tls)
        up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        await up_writer.drain()
        await self._pipe(reader, writer, up_reader, up_writer)

    async def _pipe(self, reader, writer, up_reader, up_writer) -> None:
        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while True:
                    chunk = await asyncio.wait_for(src.read(65536), timeout=self._idle_timeout)
                    if not chunk:
                        break
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, TimeoutError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    if dst.can_write_eof():
                        dst.write_eof()

        down = asyncio.ensure_future(copy(up_reader, writer))
        up = asyncio.ensure_future(copy(reader, up_writer))
        try:
            # The response ending (upstream closed) ends the exchange, whatever the client does.
            await down
        finally:
            up.cancel()
            with contextlib.suppress(BaseException):
                await up
            with contextlib.suppress(Exception):
                up_writer.close()


def ssl_context_for(ca_file: Path | None) -> ssl.SSLContext:
    """The TLS context for upstream connections: system CAs, or ``ca_file`` when given."""
    if ca_file is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_file))


class EgressProxyThread:
    """An ``EgressProxy`` on its own event loop in a daemon thread, with a blocking API.

    The sandbox worker is synchronous (Celery); this is how it hosts the proxy. One instance
    per process; the process that starts a group's container must also serve its socket.
    """

    def __init__(self, proxy: EgressProxy) -> None:
        self.proxy = proxy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="microclaw-egress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def listen_unix(self, group: str, path: Path) -> None:
        """Serve ``group`` on the Unix socket ``path``."""
        self._call(self.proxy.listen_unix(group, path))

    def listen_tcp(self, group: str, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Serve ``group`` on a TCP address; returns (host, port)."""
        return self._call(self.proxy.listen_tcp(group, host, port))

    def close_group(self, group: str) -> None:
        """Stop serving ``group``."""
        self._call(self.proxy.close_group(group))

    def close(self) -> None:
        """Stop everything and the thread."""
        if not self._loop.is_running():
            return
        with contextlib.suppress(Exception):
            self._call(self.proxy.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
