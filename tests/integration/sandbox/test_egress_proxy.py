"""The egress proxy on loopback, without containers: allow/deny, audit, injection, tunnels, TLS,
and the attacks on it (Host confusion, TRACE, header injection, names resolving to host-only
addresses, SNI mismatch, connection budgets, idle tunnels).

The proxy runs as in production: its own event loop in a thread, real sockets, real upstream
HTTP(S) servers on loopback that record what reached them. Budgets and the idle timeout come
from a ``SandboxConfig``, as the sandbox service builds them.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from microclaw.sandbox.base import SandboxConfig
from microclaw.sandbox.egress import EgressPolicy, EgressProxy, EgressProxyThread, ssl_context_for

SECRET = "Bearer sk-test-0123456789abcdef"


def http_via(proxy: tuple[str, int], request: bytes) -> bytes:
    with socket.create_connection(proxy, timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def proxy_for():
    threads: list[EgressProxyThread] = []

    def start(allow, credentials=None, https_hosts=frozenset(), ca_file=None, resolver=None, **settings):
        events: list[tuple[str, str | None, dict]] = []
        config = SandboxConfig(**settings)
        policy = EgressPolicy({"alpha": allow, "beta": allow}, credentials or {}, https_hosts)
        proxy = EgressProxy(
            policy,
            lambda kind, *, group, **data: events.append((kind, group, data)),
            connect_timeout_s=3,
            idle_timeout_s=config.egress_idle_timeout_s,
            max_connections=config.egress_max_connections,
            max_connections_per_group=config.egress_max_connections_per_group,
            ssl_context=ssl_context_for(ca_file),
            **({"resolver": resolver} if resolver else {}),
        )
        thread = EgressProxyThread(proxy)
        threads.append(thread)
        start.second_group = lambda: thread.listen_tcp("beta")  # type: ignore[attr-defined]
        return thread.listen_tcp("alpha"), events

    yield start
    for thread in threads:
        thread.close()


def tls_server(tls_cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*tls_cert)
    return ctx


def tunnel(address: tuple[str, int], target: str) -> tuple[socket.socket, bytes]:
    """Open a CONNECT tunnel; returns the socket and the proxy's reply head."""
    sock = socket.create_connection(address, timeout=10)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply and (chunk := sock.recv(4096)):
        reply += chunk
    return sock, reply


def closed_by_peer(sock: socket.socket) -> bool:
    """Blocks until the peer closes (True) or 10 s pass (False): an outcome, not a timing."""
    sock.settimeout(10)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def test_allowed_destination_passes_and_is_audited(proxy_for, upstream) -> None:
    up = upstream()
    address, events = proxy_for((f"127.0.0.1:{up.port}",))
    reply = http_via(
        address,
        f"GET http://127.0.0.1:{up.port}/a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"upstream says hi to /a?b=1\n")
    assert up.requests[0]["headers"]["Connection"] == "close"
    assert up.requests[0]["headers"]["Host"] == f"127.0.0.1:{up.port}"
    assert events == [
        (
            "egress.allow",
            "alpha",
            {"host": "127.0.0.1", "port": up.port, "method": "GET", "tls": False, "credential_headers": []},
        )
    ]


def test_everything_else_is_denied_and_audited(proxy_for, upstream) -> None:
    allowed, other = upstream(), upstream()
    address, events = proxy_for((f"127.0.0.1:{allowed.port}",))
    for request in (
        f"GET http://127.0.0.1:{other.port}/ HTTP/1.1\r\n\r\n",
        f"GET http://localhost:{allowed.port}/ HTTP/1.1\r\n\r\n",  # same box, other name: not listed
        f"CONNECT 127.0.0.1:{other.port} HTTP/1.1\r\n\r\n",
    ):
        assert http_via(address, request.encode()).startswith(b"HTTP/1.1 403")
    assert other.requests == [] and allowed.requests == []
    assert [e[0] for e in events] == ["egress.deny"] * 3
    assert events[2][2] == {
        "host": "127.0.0.1",
        "port": other.port,
        "method": "CONNECT",
        "reason": f"127.0.0.1:{other.port} is not in the allowlist",
    }


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /relative HTTP/1.1\r\n\r\n",
        b"garbage\r\n\r\n",
        b"GET ftp://x/ HTTP/1.1\r\n\r\n",
        b"GET http://u@h/ HTTP/1.1\r\n\r\n",
    ],
)
def test_malformed_requests_get_400(proxy_for, request_bytes: bytes) -> None:
    address, events = proxy_for(("127.0.0.1:*",))
    assert http_via(address, request_bytes).startswith(b"HTTP/1.1 400")
    assert events == []


def test_credentials_are_injected_replacing_the_clients_and_never_audited(proxy_for, upstream) -> None:
    up = upstream()
    address, events = proxy_for(
        (f"127.0.0.1:{up.port}",), credentials={"127.0.0.1": {"Authorization": SECRET, "X-Org": "o1"}}
    )
    reply = http_via(
        address,
        f"GET http://127.0.0.1:{up.port}/v1 HTTP/1.1\r\nAuthorization: Bearer fake\r\n"
        "Proxy-Authorization: x\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.0 200")
    headers = up.requests[0]["headers"]
    assert headers["Authorization"] == SECRET and headers["X-Org"] == "o1"
    assert "Proxy-Authorization" not in headers
    assert events[0][2]["credential_headers"] == ["Authorization", "X-Org"]
    assert SECRET not in repr(events)


def test_connect_tunnels_tls_end_to_end(proxy_for, upstream, tls_cert) -> None:
    up = upstream(ssl_context=tls_server(tls_cert))
    address, events = proxy_for((f"127.0.0.1:{up.port}",))
    sock, reply = tunnel(address, f"127.0.0.1:{up.port}")
    assert reply.startswith(b"HTTP/1.1 200")
    client = ssl.create_default_context(cafile=str(tls_cert[0]))
    with client.wrap_socket(sock, server_hostname="127.0.0.1") as tls:  # an IP: no SNI is sent
        tls.sendall(b"GET /tunnelled HTTP/1.0\r\n\r\n")
        body = b""
        while chunk := tls.recv(65536):
            body += chunk
    assert body.endswith(b"upstream says hi to /tunnelled\n")
    assert events[0][0] == "egress.allow" and events[0][2]["tunnel"] is True


def test_plain_http_is_upgraded_to_tls_with_credentials(proxy_for, upstream, tls_cert) -> None:
    up = upstream(ssl_context=tls_server(tls_cert))
    address, events = proxy_for(
        (f"127.0.0.1:{up.port}",),
        credentials={"127.0.0.1": {"X-Api-Key": "k-123"}},
        https_hosts={"127.0.0.1"},
        ca_file=tls_cert[0],
    )
    reply = http_via(
        address,
        f"GET http://127.0.0.1:{up.port}/secure HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.0 200"), reply
    assert up.requests[0]["headers"]["X-Api-Key"] == "k-123"
    assert events[0][2]["tls"] is True


# -- attacks -----------------------------------------------------------------------------


@pytest.mark.parametrize("host_header", ["attacker.example", "127.0.0.1:1", "", "127.0.0.1"])
def test_a_host_header_naming_another_vhost_gets_no_credential(proxy_for, upstream, host_header) -> None:
    up = upstream()
    address, events = proxy_for(
        (f"127.0.0.1:{up.port}",), credentials={"127.0.0.1": {"Authorization": SECRET}}
    )
    reply = http_via(
        address,
        f"GET http://127.0.0.1:{up.port}/ HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 400") and b"does not match" in reply
    assert up.requests == []  # nothing, let alone the credential, reached any virtual host
    assert [(kind, data["reason"][:11]) for kind, _, data in events] == [("egress.deny", "Host header")]


def test_two_host_headers_are_refused(proxy_for, upstream) -> None:
    up = upstream()
    address, _events = proxy_for(
        (f"127.0.0.1:{up.port}",), credentials={"127.0.0.1": {"Authorization": SECRET}}
    )
    target = f"127.0.0.1:{up.port}"
    reply = http_via(
        address, f"GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nHost: attacker.example\r\n\r\n".encode()
    )
    assert reply.startswith(b"HTTP/1.1 400") and up.requests == []


@pytest.mark.parametrize("method", ["TRACE", "TRACK", "trace"])
def test_methods_that_reflect_credentials_are_refused(proxy_for, upstream, method) -> None:
    up = upstream()
    address, events = proxy_for(
        (f"127.0.0.1:{up.port}",), credentials={"127.0.0.1": {"Authorization": SECRET}}
    )
    reply = http_via(address, f"{method} http://127.0.0.1:{up.port}/ HTTP/1.1\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 405") and SECRET.encode() not in reply
    assert up.requests == []
    assert events[0][0] == "egress.deny" and "echo injected credentials" in events[0][2]["reason"]


@pytest.mark.parametrize(
    "head",
    [
        "GET http://{t}/ HTTP/1.1\r\nX-A: 1\nHost: attacker.example\r\n\r\n",  # bare LF
        "GET http://{t}/ HTTP/1.1\r\nX-A: 1\rX-Injected: 1\r\n\r\n",  # bare CR
        "GET http://{t}/ HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
        "GET http://{t}/ HTTP/1.1\r\nX-A: 1\r\n Host: attacker.example\r\n\r\n",  # obs-fold
    ],
)
def test_cr_lf_or_nul_in_a_header_is_a_400(proxy_for, upstream, head) -> None:
    up = upstream()
    address, _events = proxy_for(
        (f"127.0.0.1:{up.port}",), credentials={"127.0.0.1": {"Authorization": SECRET}}
    )
    reply = http_via(address, head.format(t=f"127.0.0.1:{up.port}").encode("latin-1"))
    assert reply.startswith(b"HTTP/1.1 400")
    assert up.requests == []


def test_an_allowlisted_name_resolving_to_loopback_is_refused(proxy_for, upstream) -> None:
    host_only = upstream()  # a host-only service, like the control surface
    address, events = proxy_for(("localhost:*",))
    for request in (
        f"GET http://localhost:{host_only.port}/ HTTP/1.1\r\n\r\n",
        f"CONNECT localhost:{host_only.port} HTTP/1.1\r\n\r\n",
    ):
        reply = http_via(address, request.encode())
        assert reply.startswith(b"HTTP/1.1 403") and b"non-public address" in reply
    assert host_only.requests == []
    assert [e[0] for e in events] == ["egress.deny", "egress.deny"]
    assert all("127.0.0.1" in e[2]["addresses"] or "::1" in e[2]["addresses"] for e in events)


@pytest.mark.parametrize(
    "private", ["10.1.2.3", "169.254.169.254", "192.168.0.1", "0.0.0.0", "224.0.0.1", "::1"]
)
def test_a_name_resolving_to_any_non_public_address_is_refused(proxy_for, private) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", private]  # one bad record is enough: no mixed answers

    address, events = proxy_for(("api.example.com:*",), resolver=resolver)
    reply = http_via(address, b"GET http://api.example.com:8080/ HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 403")
    assert events[0][2]["addresses"] == [private]


def test_the_checked_address_is_the_one_connected_to(proxy_for, upstream) -> None:
    """No second resolution: the proxy connects where its resolver said, once."""
    up = upstream()
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"] if len(calls) > 1 else ["93.184.215.14"]  # rebinding on the 2nd ask

    address, _events = proxy_for(("rebind.example:*",), resolver=resolver)
    reply = http_via(address, f"GET http://rebind.example:{up.port}/ HTTP/1.1\r\n\r\n".encode())
    assert calls == ["rebind.example"]
    assert up.requests == [] and not reply.startswith(b"HTTP/1.0 200")


def test_a_wildcard_or_name_entry_does_not_open_private_literals(proxy_for, upstream) -> None:
    up = upstream()
    address, _events = proxy_for(("*.0.0.1:*",))
    reply = http_via(address, f"GET http://127.0.0.1:{up.port}/ HTTP/1.1\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403") and up.requests == []


@pytest.mark.parametrize("sni", ["attacker.example", "api.example.com.evil"])
def test_connect_with_a_mismatching_sni_is_refused(proxy_for, upstream, sni) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]  # public; never connected to: the SNI check comes first

    address, events = proxy_for(("api.example.com:443",), resolver=resolver)
    sock, reply = tunnel(address, "api.example.com:443")
    assert reply.startswith(b"HTTP/1.1 200")
    client = ssl.create_default_context()
    with pytest.raises((ssl.SSLError, OSError)):
        client.wrap_socket(sock, server_hostname=sni)  # a real ClientHello from Python's ssl
    sock.close()
    assert [e[0] for e in events] == ["egress.deny"]
    assert events[0][2]["reason"] == f"SNI {sni!r} in a tunnel allowed for api.example.com"


def test_connect_to_an_address_with_an_sni_or_without_tls_is_refused(proxy_for, upstream, tls_cert) -> None:
    up = upstream(ssl_context=tls_server(tls_cert))
    address, events = proxy_for((f"127.0.0.1:{up.port}",))
    sock, reply = tunnel(address, f"127.0.0.1:{up.port}")
    assert reply.startswith(b"HTTP/1.1 200")
    with pytest.raises((ssl.SSLError, OSError)):
        ssl.create_default_context(cafile=str(tls_cert[0])).wrap_socket(sock, server_hostname="localhost")
    sock.close()
    sock, _ = tunnel(address, f"127.0.0.1:{up.port}")
    sock.sendall(b"GET / HTTP/1.0\r\nHost: attacker.example\r\n\r\n")
    assert closed_by_peer(sock)
    sock.close()
    assert [e[0] for e in events] == ["egress.deny", "egress.deny"]
    assert "SNI 'localhost' in a tunnel to the address" in events[0][2]["reason"]
    assert "did not start with a TLS ClientHello" in events[1][2]["reason"]
    assert up.requests == []


def test_idle_tunnels_exhaust_only_their_groups_budget(proxy_for, upstream) -> None:
    up = upstream()
    address, events = proxy_for(
        (f"127.0.0.1:{up.port}",), egress_max_connections_per_group=3, egress_max_connections=10
    )
    beta = proxy_for.second_group()
    idle = [tunnel(address, f"127.0.0.1:{up.port}") for _ in range(3)]
    assert all(reply.startswith(b"HTTP/1.1 200") for _, reply in idle)

    refused = http_via(address, f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
    assert refused.startswith(b"HTTP/1.1 503")
    assert b"egress connection budget of group alpha exhausted: 3 open" in refused
    other = http_via(beta, f"GET http://127.0.0.1:{up.port}/beta HTTP/1.1\r\n\r\n".encode())
    assert other.startswith(b"HTTP/1.0 200")  # another group still gets through
    deny = [d for k, g, d in events if k == "egress.deny"]
    assert len(deny) == 1 and deny[0]["budget"] is True and "alpha" in deny[0]["reason"]

    for sock, _ in idle:
        sock.close()


def test_the_global_budget_protects_every_group(proxy_for, upstream) -> None:
    up = upstream()
    address, _events = proxy_for(
        (f"127.0.0.1:{up.port}",), egress_max_connections_per_group=5, egress_max_connections=2
    )
    beta = proxy_for.second_group()
    idle = [tunnel(address, f"127.0.0.1:{up.port}") for _ in range(2)]
    refused = http_via(beta, f"GET http://127.0.0.1:{up.port}/ HTTP/1.1\r\n\r\n".encode())
    assert refused.startswith(b"HTTP/1.1 503") and b"sandbox.egress_max_connections)" in refused
    for sock, _ in idle:
        sock.close()


def test_idle_connections_are_closed_and_their_budget_freed(proxy_for, upstream, tls_cert) -> None:
    up = upstream(ssl_context=tls_server(tls_cert))
    address, _events = proxy_for(
        (f"127.0.0.1:{up.port}",), egress_idle_timeout_s=0.3, egress_max_connections_per_group=2
    )
    # Silent before the ClientHello, silent inside an established TLS tunnel, silent before
    # any request head: each is closed by the proxy, not by the test.
    waiting, reply = tunnel(address, f"127.0.0.1:{up.port}")
    assert reply.startswith(b"HTTP/1.1 200")
    established, reply = tunnel(address, f"127.0.0.1:{up.port}")
    tls = ssl.create_default_context(cafile=str(tls_cert[0])).wrap_socket(
        established, server_hostname="127.0.0.1"
    )
    assert closed_by_peer(waiting)
    assert closed_by_peer(tls)
    silent = socket.create_connection(address, timeout=10)
    assert closed_by_peer(silent)
    for sock in (waiting, tls, silent):
        sock.close()
    # Both slots are free again.
    again = [tunnel(address, f"127.0.0.1:{up.port}") for _ in range(2)]
    assert all(reply.startswith(b"HTTP/1.1 200") for _, reply in again)
    for sock, _ in again:
        sock.close()


def test_unreachable_upstream_is_a_502(proxy_for) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    address, events = proxy_for((f"127.0.0.1:{dead_port}",))
    assert http_via(address, f"GET http://127.0.0.1:{dead_port}/ HTTP/1.1\r\n\r\n".encode()).startswith(
        b"HTTP/1.1 502"
    )
    assert [e[0] for e in events] == ["egress.allow", "egress.error"]
