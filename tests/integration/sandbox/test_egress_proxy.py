"""The egress proxy on loopback, without containers: allow/deny, audit, injection, tunnels, TLS."""

from __future__ import annotations

import socket
import ssl

import pytest

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

    def start(allow, credentials=None, https_hosts=frozenset(), ca_file=None):
        events: list[tuple[str, str | None, dict]] = []
        policy = EgressPolicy({"alpha": allow}, credentials or {}, https_hosts)
        proxy = EgressProxy(
            policy,
            lambda kind, *, group, **data: events.append((kind, group, data)),
            connect_timeout_s=3,
            ssl_context=ssl_context_for(ca_file),
        )
        thread = EgressProxyThread(proxy)
        threads.append(thread)
        return thread.listen_tcp("alpha"), events

    yield start
    for thread in threads:
        thread.close()


def test_allowed_destination_passes_and_is_audited(proxy_for, upstream) -> None:
    up = upstream()
    address, events = proxy_for((f"127.0.0.1:{up.port}",))
    reply = http_via(address, f"GET http://127.0.0.1:{up.port}/a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"upstream says hi to /a?b=1\n")
    assert up.requests[0]["headers"]["Connection"] == "close"
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
    assert events[2][2] == {"host": "127.0.0.1", "port": other.port, "method": "CONNECT"}


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


def test_connect_tunnels_bytes(proxy_for, upstream) -> None:
    up = upstream()
    address, events = proxy_for((f"127.0.0.1:{up.port}",))
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /tunnelled HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.endswith(b"upstream says hi to /tunnelled\n")
    assert events[0][0] == "egress.allow" and events[0][2]["tunnel"] is True


def test_plain_http_is_upgraded_to_tls_with_credentials(proxy_for, upstream, tls_cert) -> None:
    cert, key = tls_cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    up = upstream(ssl_context=server_ctx)
    address, events = proxy_for(
        (f"localhost:{up.port}",),
        credentials={"localhost": {"X-Api-Key": "k-123"}},
        https_hosts={"localhost"},
        ca_file=cert,
    )
    reply = http_via(
        address, f"GET http://localhost:{up.port}/secure HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    )
    assert reply.startswith(b"HTTP/1.0 200"), reply
    assert up.requests[0]["headers"]["X-Api-Key"] == "k-123"
    assert events[0][2]["tls"] is True


def test_unreachable_upstream_is_a_502(proxy_for) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    address, events = proxy_for((f"127.0.0.1:{dead_port}",))
    assert http_via(address, f"GET http://127.0.0.1:{dead_port}/ HTTP/1.1\r\n\r\n".encode()).startswith(
        b"HTTP/1.1 502"
    )
    assert [e[0] for e in events] == ["egress.allow", "egress.error"]
