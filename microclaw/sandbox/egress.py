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
- ``CONNECT host:port``: a byte tunnel for TLS after the policy and SNI checks, no injection.

The allowlist is checked against the *upstream* destination (host, port): for an upgraded
host that is port 443. Every decision is audited (``egress.allow`` / ``egress.deny`` /
``egress.error``) with group, host, port and method (a refusal also names its ``reason``);
injected header *names* are recorded, values never are (not in logs, audit rows, errors or
reprs).

What a request must satisfy beyond the allowlist (each refusal is an ``egress.deny``):
- The upstream ``Host`` header is always the URL's authority. A client ``Host`` naming
  another host or port is refused (400): otherwise ``GET http://allowed/`` with
  ``Host: attacker.example`` would carry ``allowed``'s credentials to another virtual host
  on the same server. Credentials are injected only for an exact host match.
- ``TRACE`` and ``TRACK`` are refused (405): they echo the request, injected credentials
  included, back to the container. Method names must be tokens.
- A request line or header holding a bare CR or LF, a NUL, or an obsolete folded line is
  refused (400): it would otherwise reach upstream as a second header or request.
- Names are resolved here, and every address must be public (not loopback, private,
  link-local, shared, reserved, multicast or unspecified): an allowlisted name that resolves
  to a host-only service is refused. An operator who really means a private service lists
  its literal address (``"10.0.0.5:8080"``); only an exact literal entry allows a private
  address, never a name or a wildcard. The proxy connects to the address it checked, never
  to a second resolution (no DNS rebinding between check and connect).
- A CONNECT tunnel must start with a TLS ClientHello whose SNI is the CONNECT host; a
  mismatch, a hello without SNI for a named host, an SNI for an IP-literal host, or any
  non-TLS first bytes close the tunnel (``clienthello.py`` reads the SNI). Encrypted Client
  Hello's inner name is invisible: the outer one is what is checked.
- Budgets: at most ``max_connections`` open connections in all and
  ``max_connections_per_group`` per group (counted from accept, tunnels included); the next
  one gets a 503 naming the budget. A connection that moves no byte either way for
  ``idle_timeout_s`` is closed (also while waiting for a request head or a ClientHello).

Does not: resolve names for the container (it never needs DNS), cache, authenticate the
container (identity is the socket), or keep connections alive (one request per connection,
``Connection: close`` both ways).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from microclaw.errors import ConfigError
from microclaw.sandbox.clienthello import NotClientHello, read_client_hello, server_name

logger = logging.getLogger(__name__)

AuditFn = Callable[..., None]
#: ``resolve(host, port)`` -> the addresses to check and connect to (the system resolver).
Resolver = Callable[[str, int], Awaitable[list[str]]]
MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 30.0
REFUSAL_DRAIN_S = 1.0
#: Methods whose response echoes the request, injected credentials included.
REFLECTING_METHODS = frozenset({"TRACE", "TRACK"})
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOST_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
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

    def allows_private_literal(self, group: str, host: str, port: int) -> bool:
        """True when an exact, non-wildcard entry of ``group`` names the IP literal ``host``.

        The only way a non-public address is reached: the operator wrote that address.
        """
        host = normalize_host(host)
        return _ip(host) is not None and any(
            d.host == host and d.matches(host, port) for d in self._allow.get(group, ())
        )

    def has_egress(self, group: str) -> bool:
        """True when the group has any allowlist entry at all."""
        return bool(self._allow.get(group))

    def upgrade_to_tls(self, host: str) -> bool:
        """True when plain-HTTP requests for ``host`` go upstream over TLS."""
        return normalize_host(host) in self._https

    def headers_for(self, host: str) -> Mapping[str, str]:
        """Credential headers to inject for exactly ``host`` (empty when none; no wildcards)."""
        return self._credentials.get(normalize_host(host), {})


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address (IPv4-mapped IPv6 judged as IPv4)."""
    ip = _ip(address.split("%", 1)[0])
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's resolver (``getaddrinfo``): every TCP address of ``host``, in order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _HttpError(Exception):
    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail


class _Closed(Exception):
    """Refused after the tunnel was established: nothing more can be said, just close."""


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
    host = normalize_host(host)
    if not host or not 0 < port_num < 65536 or (_ip(host) is None and not _HOST_RE.match(host)):
        raise _HttpError(400, "Bad Request")
    return host, port_num


def _authority(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


class EgressProxy:
    """The asyncio proxy server. All methods run on its event loop.

    ``audit(kind, *, group, **data)`` is called from the loop thread for every decision; it
    must be thread-safe and quick. ``resolver`` is the name lookup (the system resolver unless
    a test injects one).
    """

    def __init__(
        self,
        policy: EgressPolicy,
        audit: AuditFn,
        *,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 300.0,
        max_connections: int = 256,
        max_connections_per_group: int = 32,
        ssl_context: ssl.SSLContext | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.policy = policy
        self._audit = audit
        self._connect_timeout = connect_timeout_s
        self._idle_timeout = idle_timeout_s
        self._max_total = max_connections
        self._max_group = max_connections_per_group
        self._ssl = ssl_context or ssl.create_default_context()
        self._resolve = resolver
        self._servers: dict[str, list[asyncio.AbstractServer]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._open_total = 0
        self._open_by_group: dict[str, int] = {}

    def open_connections(self, group: str | None = None) -> int:
        """Connections open now, for ``group`` or in all."""
        return self._open_total if group is None else self._open_by_group.get(group, 0)

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

    def _over_budget(self, group: str) -> str | None:
        if self._open_by_group.get(group, 0) >= self._max_group:
            return (
                f"egress connection budget of group {group} exhausted: {self._max_group} open "
                "(sandbox.egress_max_connections_per_group); close idle connections"
            )
        if self._open_total >= self._max_total:
            return (
                f"egress connection budget of this sandbox worker exhausted: {self._max_total} "
                "open across all groups (sandbox.egress_max_connections)"
            )
        return None

    async def _handle(self, group: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        over = self._over_budget(group)
        if over is not None:
            # Answered at once and closed: a refused connection holds no descriptor for long.
            self._audit("egress.deny", group=group, reason=over, budget=True)
            logger.warning("egress deny %s: %s", group, over, extra={"group": group})
            with contextlib.suppress(Exception):
                writer.write(_response(503, "Service Unavailable", over + "\n"))
                await writer.drain()
                writer.write_eof()
                # Read what the client already sent: closing with unread bytes resets the
                # connection, and the client would see a reset instead of the reason.
                await asyncio.wait_for(reader.read(MAX_HEAD_BYTES), timeout=REFUSAL_DRAIN_S)
            with contextlib.suppress(Exception):
                writer.close()
            return
        self._open_total += 1
        self._open_by_group[group] = self._open_by_group.get(group, 0) + 1
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve_one(group, reader, writer)
        except _HttpError as exc:
            with contextlib.suppress(Exception):
                writer.write(_response(exc.status, exc.reason, exc.detail and exc.detail + "\n"))
                await writer.drain()
        except (
            _Closed,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
        ):
            pass
        except asyncio.CancelledError:
            pass  # aclose(): the proxy is stopping; this is the top of the connection's task
        except Exception:
            logger.exception("egress proxy connection failed", extra={"group": group})
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            self._open_total -= 1
            self._open_by_group[group] -= 1
            if task is not None:
                self._tasks.discard(task)

    def _refuse(self, group: str, status: int, reason: str, detail: str, **data: Any) -> _HttpError:
        self._audit("egress.deny", group=group, reason=detail, **data)
        logger.info("egress deny %s: %s", group, detail, extra={"group": group})
        return _HttpError(status, reason, detail)

    async def _serve_one(
        self, group: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), timeout=min(HEAD_TIMEOUT_S, self._idle_timeout)
            )
        except asyncio.LimitOverrunError as exc:
            raise _HttpError(431, "Request Header Fields Too Large") from exc
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _HttpError(400, "Bad Request")
        method, target, version = parts
        if any(c in line for line in lines for c in "\r\n\x00"):
            # A bare CR or LF would reach upstream as a line break: a smuggled header or request.
            raise self._refuse(group, 400, "Bad Request", "bare CR, LF or NUL in the request head")
        if not _TOKEN_RE.match(method):
            raise _HttpError(400, "Bad Request")
        if method.upper() in REFLECTING_METHODS:
            raise self._refuse(
                group,
                405,
                "Method Not Allowed",
                f"{method.upper()} is refused: it would echo injected credentials back",
                method=method.upper(),
            )
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN_RE.match(name):  # also refuses obsolete line folding
                raise _HttpError(400, "Bad Request")
            headers.append((name, value.strip(" \t")))
        if method.upper() == "CONNECT":
            await self._connect(group, target, reader, writer)
        else:
            await self._forward(group, method, target, version, headers, reader, writer)

    def _allowed(self, group: str, method: str, host: str, port: int) -> None:
        if not self.policy.allows(group, host, port):
            raise self._refuse(
                group,
                403,
                "Forbidden",
                f"{host}:{port} is not in the allowlist",
                host=host,
                port=port,
                method=method,
            )

    async def _addresses(self, group: str, method: str, host: str, port: int) -> list[str]:
        """The checked addresses to connect to, or an ``egress.deny`` / ``egress.error``."""
        if _ip(host) is not None:
            if is_public_address(host) or self.policy.allows_private_literal(group, host, port):
                return [host]
            raise self._refuse(
                group,
                403,
                "Forbidden",
                f"{host} is not a public address (only an exact literal allowlist entry allows it)",
                host=host,
                port=port,
                method=method,
            )
        try:
            addresses = await asyncio.wait_for(self._resolve(host, port), timeout=self._connect_timeout)
        except (OSError, TimeoutError, UnicodeError) as exc:
            self._audit("egress.error", group=group, host=host, port=port, error=type(exc).__name__)
            raise _HttpError(502, "Bad Gateway", f"cannot resolve {host}") from exc
        private = [a for a in addresses if not is_public_address(a)]
        if private or not addresses:
            raise self._refuse(
                group,
                403,
                "Forbidden",
                f"{host} resolves to a non-public address ({', '.join(private) or 'none'})",
                host=host,
                port=port,
                method=method,
                addresses=private,
            )
        return addresses

    async def _open(self, group: str, host: str, port: int, addresses: list[str], tls: bool):
        last: BaseException | None = None
        for address in addresses:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(
                        address, port, ssl=self._ssl if tls else None, server_hostname=host if tls else None
                    ),
                    timeout=self._connect_timeout,
                )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                last = exc
        self._audit("egress.error", group=group, host=host, port=port, error=type(last).__name__)
        raise _HttpError(502, "Bad Gateway")

    async def _connect(self, group: str, target: str, reader, writer) -> None:
        host, port = _split_target(target, 443)
        self._allowed(group, "CONNECT", host, port)
        addresses = await self._addresses(group, "CONNECT", host, port)
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        try:
            raw, hello = await asyncio.wait_for(read_client_hello(reader), timeout=self._idle_timeout)
            sni = server_name(hello)
        except NotClientHello as exc:
            self._deny_tunnel(group, host, port, f"the tunnel did not start with a TLS ClientHello ({exc})")
        literal = _ip(host) is not None
        if literal and sni is not None:
            self._deny_tunnel(group, host, port, f"SNI {sni!r} in a tunnel to the address {host}")
        if not literal and sni != host:
            shown = "no SNI" if sni is None else f"SNI {sni!r}"
            self._deny_tunnel(group, host, port, f"{shown} in a tunnel allowed for {host}")
        self._audit("egress.allow", group=group, host=host, port=port, method="CONNECT", tunnel=True)
        logger.info("egress allow %s -> %s:%s (tunnel)", group, host, port, extra={"group": group})
        try:
            up_reader, up_writer = await self._open(group, host, port, addresses, tls=False)
        except _HttpError as exc:
            raise _Closed from exc  # the 200 is out: closing is all that is left to say
        up_writer.write(raw)
        await up_writer.drain()
        await self._pipe(reader, writer, up_reader, up_writer)

    def _deny_tunnel(self, group: str, host: str, port: int, reason: str) -> NoReturn:
        self._audit("egress.deny", group=group, host=host, port=port, method="CONNECT", reason=reason)
        logger.info("egress deny %s -> %s:%s: %s", group, host, port, reason, extra={"group": group})
        raise _Closed(reason)

    async def _forward(self, group, method, target, version, headers, reader, writer) -> None:
        url = urlsplit(target)
        if url.scheme.lower() != "http" or not url.netloc or "@" in url.netloc:
            raise _HttpError(400, "Bad Request")
        host, url_port = _split_target(url.netloc, 80)
        explicit_port = url_port if url.netloc.rsplit("]", 1)[-1].count(":") else None
        method = method.upper()
        hosts = [value for name, value in headers if name.lower() == "host"]
        if len(hosts) > 1:
            raise self._refuse(
                group, 400, "Bad Request", "more than one Host header", host=host, method=method
            )
        if hosts:
            try:
                claimed = _split_target(hosts[0], 80)
            except _HttpError:
                claimed = None
            if claimed != (host, url_port):
                raise self._refuse(
                    group,
                    400,
                    "Bad Request",
                    f"Host header {hosts[0][:100]!r} does not match the request URL's host {host}",
                    host=host,
                    method=method,
                )
        tls = self.policy.upgrade_to_tls(host)
        port = explicit_port or (443 if tls else 80)
        self._allowed(group, method, host, port)
        addresses = await self._addresses(group, method, host, port)
        inject = self.policy.headers_for(host)
        self._audit(
            "egress.allow",
            group=group,
            host=host,
            port=port,
            method=method,
            tls=tls,
            credential_headers=sorted(inject) if inject else [],
        )
        logger.info("egress allow %s -> %s:%s", group, host, port, extra={"group": group})
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        drop = {name.lower() for name in inject} | _HOP_BY_HOP | {"host"}
        out = [f"{method} {path} {version}", f"Host: {_authority(host, explicit_port)}"]
        out += [f"{name}: {value}" for name, value in headers if name.lower() not in drop]
        out += [f"{name}: {value}" for name, value in inject.items()]
        out.append("Connection: close")
        up_reader, up_writer = await self._open(group, host, port, addresses, tls)
        up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        await up_writer.drain()
        await self._pipe(reader, writer, up_reader, up_writer)

    async def _pipe(self, reader, writer, up_reader, up_writer) -> None:
        loop = asyncio.get_running_loop()
        last = [loop.time()]

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    last[0] = loop.time()
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    if dst.can_write_eof():
                        dst.write_eof()

        down = asyncio.ensure_future(copy(up_reader, writer))
        up = asyncio.ensure_future(copy(reader, up_writer))
        try:
            # The response ending (upstream closed) ends the exchange, whatever the client does;
            # so does silence both ways for the idle timeout.
            while not down.done():
                remaining = last[0] + self._idle_timeout - loop.time()
                if remaining <= 0:
                    break
                await asyncio.wait({down}, timeout=remaining)
        finally:
            for task in (down, up):
                task.cancel()
            for task in (down, up):
                with contextlib.suppress(BaseException):
                    await task
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
