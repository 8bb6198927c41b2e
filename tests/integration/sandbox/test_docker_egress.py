"""Deny-by-default egress, the allowlist proxy and the credential broker, on the real engine.

Topology under test: network mode ``none`` for every container; a group with an allowlist
gets the in-container relay (127.0.0.1:3128) to this process's egress proxy over a Unix
socket. The host servers below listen on 0.0.0.0, the worst case for a host service.
"""

from __future__ import annotations

import ipaddress
import json
import uuid

import pytest

pytestmark = pytest.mark.docker

# Runs inside the container (python3 is in the image): one raw HTTP exchange, so the test does
# not depend on any client's proxy quirks. argv: host port request-bytes.
RAW_HTTP = r"""
import socket, sys
host, port, request = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode().decode("unicode_escape").encode()
try:
    s = socket.create_connection((host, port), timeout=3)
except OSError as exc:
    print("CONNECT-FAILED", type(exc).__name__, exc)
    sys.exit(0)
s.sendall(request)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode("latin-1"))
"""


def raw_http(sb, group: str, host: str, port: int, request: str) -> str:
    return sb.service.exec(group, ["python3", "-c", RAW_HTTP, host, str(port), request]).stdout_text


@pytest.fixture
def gateway(docker_client) -> str:
    """The default bridge's gateway: a host address containers would use if they had a route."""
    ipam = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    return ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))


def test_no_allowlist_means_no_network_at_all(make_sandbox, upstream, gateway) -> None:
    host_service = upstream("0.0.0.0")
    sb = make_sandbox()
    for address in ("127.0.0.1", gateway):
        out = raw_http(sb, "alpha", address, host_service.port, r"GET / HTTP/1.0\r\n\r\n")
        assert out.startswith("CONNECT-FAILED"), (address, out)
    env = sb.service.exec("alpha", ["env"]).stdout_text
    assert "PROXY" not in env.upper()
    assert raw_http(sb, "alpha", "127.0.0.1", 3128, r"GET http://x/ HTTP/1.0\r\n\r\n").startswith(
        "CONNECT-FAILED"
    )
    assert host_service.requests == []


def test_allowlist_reaches_only_the_allowed_upstream_through_the_proxy(
    make_sandbox, upstream, gateway
) -> None:
    allowed, forbidden = upstream("0.0.0.0"), upstream("0.0.0.0")
    sb = make_sandbox(network_allowlists={"alpha": (f"127.0.0.1:{allowed.port}",)})

    ok = raw_http(
        sb, "alpha", "127.0.0.1", 3128, rf"GET http://127.0.0.1:{allowed.port}/hello HTTP/1.1\r\n\r\n"
    )
    assert ok.startswith("HTTP/1.0 200") and "upstream says hi to /hello" in ok

    # The usual client path: proxy variables are set, busybox wget honours them.
    wget = sb.service.exec("alpha", ["wget", "-q", "-O", "-", f"http://127.0.0.1:{allowed.port}/wget"])
    assert wget.stdout == b"upstream says hi to /wget\n", wget

    denied = raw_http(
        sb, "alpha", "127.0.0.1", 3128, rf"GET http://127.0.0.1:{forbidden.port}/ HTTP/1.1\r\n\r\n"
    )
    assert denied.startswith("HTTP/1.1 403")
    tunnel = raw_http(sb, "alpha", "127.0.0.1", 3128, rf"CONNECT 127.0.0.1:{forbidden.port} HTTP/1.1\r\n\r\n")
    assert tunnel.startswith("HTTP/1.1 403")
    for address in (gateway, "127.0.0.1"):  # no way around the proxy
        for port in (allowed.port, forbidden.port):
            assert raw_http(sb, "alpha", address, port, r"GET / HTTP/1.0\r\n\r\n").startswith(
                "CONNECT-FAILED"
            )

    assert forbidden.requests == []
    assert [r["path"] for r in allowed.requests] == ["/hello", "/wget"]
    denies = sb.audited("egress.deny")
    assert {(d["group"], d["host"], d["port"], d["method"]) for d in denies} == {
        ("alpha", "127.0.0.1", forbidden.port, "GET"),
        ("alpha", "127.0.0.1", forbidden.port, "CONNECT"),
    }
    assert len(sb.audited("egress.allow")) == 2


def test_another_group_gets_no_egress(make_sandbox, upstream) -> None:
    allowed = upstream("0.0.0.0")
    sb = make_sandbox(network_allowlists={"alpha": (f"127.0.0.1:{allowed.port}",)})
    out = raw_http(sb, "beta", "127.0.0.1", 3128, rf"GET http://127.0.0.1:{allowed.port}/ HTTP/1.1\r\n\r\n")
    assert out.startswith("CONNECT-FAILED")
    assert allowed.requests == []


def test_injected_credential_reaches_upstream_but_never_the_container(
    make_sandbox, upstream, docker_client
) -> None:
    secret = f"Bearer sk-live-{uuid.uuid4().hex}"
    api = upstream("127.0.0.1")
    sb = make_sandbox(
        network_allowlists={"alpha": (f"127.0.0.1:{api.port}",)},
        egress_credentials={"127.0.0.1": {"Authorization": secret}},
    )
    reply = raw_http(
        sb,
        "alpha",
        "127.0.0.1",
        3128,
        rf"GET http://127.0.0.1:{api.port}/v1/models HTTP/1.1\r\nAuthorization: Bearer guess\r\n\r\n",
    )
    assert reply.startswith("HTTP/1.0 200")
    assert api.requests[0]["headers"]["Authorization"] == secret

    token = secret.split()[-1]
    head, tail = token[:8], token[8:]  # the hunt's own argv must not contain the token
    hunt = (
        "env; cat /proc/self/environ; for p in /proc/[0-9]*; do cat $p/environ $p/cmdline; done 2>/dev/null; "
        f'h={head}; grep -rl "$h{tail}" /workspace /tmp /etc /run /opt /home /usr 2>/dev/null; echo hunt-done'
    )
    out = sb.service.exec("alpha", ["sh", "-c", hunt]).stdout
    assert b"hunt-done" in out
    assert token.encode() not in out
    attrs = sb.container(docker_client, "alpha").attrs
    assert token not in json.dumps(attrs)
    assert token not in repr(sb.events) and token not in repr(sb.config)
    allow = sb.audited("egress.allow")[0]
    assert allow["credential_headers"] == ["Authorization"]


def test_egress_survives_a_warm_reuse_and_stops_with_the_group(make_sandbox, upstream) -> None:
    api = upstream("127.0.0.1")
    sb = make_sandbox(network_allowlists={"alpha": (f"127.0.0.1:{api.port}",)})
    request = rf"GET http://127.0.0.1:{api.port}/again HTTP/1.1\r\n\r\n"
    assert raw_http(sb, "alpha", "127.0.0.1", 3128, request).startswith("HTTP/1.0 200")
    assert sb.service.ensure("alpha").created is False
    assert raw_http(sb, "alpha", "127.0.0.1", 3128, request).startswith("HTTP/1.0 200")
    assert sb.service.stop("alpha")
    assert len(api.requests) == 2


def test_host_header_confusion_from_inside_the_container_gets_no_credential(make_sandbox, upstream) -> None:
    secret = f"Bearer sk-live-{uuid.uuid4().hex}"
    api = upstream("127.0.0.1")
    sb = make_sandbox(
        network_allowlists={"alpha": (f"127.0.0.1:{api.port}",)},
        egress_credentials={"127.0.0.1": {"Authorization": secret}},
    )
    for request in (
        rf"GET http://127.0.0.1:{api.port}/ HTTP/1.1\r\nHost: attacker.example\r\n\r\n",
        rf"TRACE http://127.0.0.1:{api.port}/ HTTP/1.1\r\n\r\n",
        rf"GET http://127.0.0.1:{api.port}/ HTTP/1.1\r\nX-A: 1\nHost: attacker.example\r\n\r\n",
    ):
        reply = raw_http(sb, "alpha", "127.0.0.1", 3128, request)
        assert reply.startswith(("HTTP/1.1 400", "HTTP/1.1 405")), reply
        assert secret not in reply
    assert api.requests == []
    assert [d["reason"][:11] for d in sb.audited("egress.deny")] == [
        "Host header",
        "TRACE is re",
        "bare CR, LF",
    ]


# Holds N CONNECT tunnels open through the relay, then tries one more: the per-group budget.
HOLD_TUNNELS = r"""
import socket, sys
target, n = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(n + 1):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
    s.sendall(("CONNECT %s HTTP/1.1\r\n\r\n" % target).encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    if not reply.startswith(b"HTTP/1.1 200"):
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except OSError:
            pass
    held.append(s)
    text = reply.decode("latin-1")
    print(text.split("\r\n")[0], "|", text.split("\r\n\r\n", 1)[-1].strip())
"""


def test_one_groups_idle_tunnels_cannot_starve_another_group(make_sandbox, upstream) -> None:
    api = upstream("127.0.0.1")
    allow = (f"127.0.0.1:{api.port}",)
    sb = make_sandbox(network_allowlists={"alpha": allow, "beta": allow}, egress_max_connections_per_group=3)
    out = sb.service.exec("alpha", ["python3", "-c", HOLD_TUNNELS, f"127.0.0.1:{api.port}", "3"]).stdout_text
    lines = out.splitlines()
    assert all(line.startswith("HTTP/1.1 200") for line in lines[:3]), out
    assert lines[3].startswith("HTTP/1.1 503") and "budget of group alpha exhausted: 3 open" in lines[3]
    deny = sb.audited("egress.deny")
    assert len(deny) == 1 and deny[0]["budget"] is True
    # beta's egress works (concurrently held tunnels vs another group: test_egress_proxy.py).
    ok = raw_http(sb, "beta", "127.0.0.1", 3128, rf"GET http://127.0.0.1:{api.port}/beta HTTP/1.1\r\n\r\n")
    assert ok.startswith("HTTP/1.0 200")
