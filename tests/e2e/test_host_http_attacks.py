"""Attacks on the real host process's localhost HTTP surface, from outside, over loopback.

One ``microclaw-host run --foreground`` per module, started under umask 022 on a fresh data
directory, is attacked the way a web page (cross-site simple requests, DNS rebinding) or
another local user would; every refusal must be clear, audited, store nothing, and leave the
host serving. No worker runs: nothing here needs a reply.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import Engine, func, select

from microclaw.store import audit
from microclaw.store.db import create_sqlite_engine, read_tx
from microclaw.store.models import Chat, Message
from tests.conftest import base_env
from tests.integration.stack import host_headers, wait_for

BIN = Path(sys.executable).parent
MIB = 1024 * 1024


@dataclass
class RunningHost:
    root: Path
    proc: subprocess.Popen[bytes]
    port: int
    engine: Engine

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, *, token: bool = True, timeout: float = 10) -> httpx.Client:
        headers = host_headers(self.data) if token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def messages(self) -> int:
        with read_tx(self.engine) as conn:
            return int(conn.execute(select(func.count()).select_from(Message.__table__)).scalar_one())

    def chats(self) -> set[str]:
        with read_tx(self.engine) as conn:
            return set(conn.execute(select(Chat.__table__.c.jid)).scalars())

    def audit(self, kind: str) -> list[dict[str, Any]]:
        with read_tx(self.engine) as conn:
            return audit.recent(conn, kind=kind, limit=500)

    def serving(self) -> bool:
        assert self.proc.poll() is None, "the host process died"
        with self.client(timeout=5) as client:
            return client.get("/status").status_code == 200


@contextlib.contextmanager
def running_host(root: Path) -> Iterator[RunningHost]:
    """``microclaw-host run --foreground`` on ``root/data``, until the block ends."""
    env = base_env(root, MICROCLAW_LOGGING__FORMAT="text")
    log = open(root / "host.out", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [str(BIN / "microclaw-host"), "run", "--foreground"],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        umask=0o022,  # a user's usual umask: the host must make its files private itself
    )
    running = RunningHost(root, proc, int(env["MICROCLAW_HTTP__PORT"]), None)  # type: ignore[arg-type]

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the host exited: {(root / 'host.out').read_text(errors='replace')}")
        try:
            with running.client(timeout=1) as client:
                return client.get("/status").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 30, "the host's HTTP surface")
        running.engine = create_sqlite_engine(running.data / "microclaw.db")
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        if running.engine is not None:
            running.engine.dispose()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    with running_host(tmp_path_factory.mktemp("host")) as running:
        yield running


def test_a_web_pages_text_plain_post_without_the_token_is_refused_and_stores_nothing(
    host: RunningHost,
) -> None:
    """What ``fetch(url, {method: "POST", mode: "no-cors", body})`` from any page sends."""
    before = host.messages()
    with host.client(token=False) as client:
        response = client.post(
            "/api/chat",
            content=b'{"text": "delete everything"}',
            headers={"Content-Type": "text/plain;charset=UTF-8"},
        )
        bare = client.get("/status")
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["error"]
    assert bare.status_code == 401
    assert host.messages() == before
    codes = [row["detail"]["code"] for row in host.audit("http.refused")]
    assert "no_token" in codes
    assert host.serving()


def test_even_with_the_token_a_text_plain_body_is_refused(host: RunningHost) -> None:
    before = host.messages()
    with host.client() as client:
        response = client.post("/api/chat", content=b'{"text": "hi"}', headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    assert host.messages() == before


def test_a_wrong_token_is_refused(host: RunningHost) -> None:
    with host.client(token=False) as client:
        response = client.get("/status", headers={"Authorization": "Bearer " + "x" * 43})
    assert response.status_code == 401
    assert response.json()["code"] == "bad_token"


def test_requests_carrying_an_origin_or_cross_site_fetch_metadata_are_refused(host: RunningHost) -> None:
    """Even holding the token: a page must never drive the surface through the user's browser."""
    before = host.messages()
    with host.client() as client:
        with_origin = client.post(
            "/api/chat", json={"text": "from a page"}, headers={"Origin": "https://evil.example"}
        )
        same_site = client.get("/status", headers={"Sec-Fetch-Site": "same-site"})
        cross_site = client.get("/api/chat/replies", headers={"Sec-Fetch-Site": "cross-site"})
    assert [with_origin.status_code, same_site.status_code, cross_site.status_code] == [403, 403, 403]
    assert all(r.json()["code"] == "cross_site" for r in (with_origin, same_site, cross_site))
    assert host.messages() == before


def test_dns_rebinding_host_header_is_refused(host: RunningHost) -> None:
    """A rebinding page's requests carry its own name as Host; the token must not even matter."""
    with host.client() as client:
        status = client.get("/status", headers={"Host": "evil.example"})
        replies = client.get("/api/chat/replies", headers={"Host": f"evil.example:{host.port}"})
        health = client.get("/health", headers={"Host": "rebind.evil.example"})
        allowed = client.get("/status", headers={"Host": f"localhost:{host.port}"})
    assert [status.status_code, replies.status_code, health.status_code] == [403, 403, 403]
    assert "loopback" in status.json()["error"]
    assert "replies" not in replies.text
    assert allowed.status_code == 200
    assert "bad_host" in [row["detail"]["code"] for row in host.audit("http.refused")]


def test_the_open_health_probe_reveals_only_liveness(host: RunningHost) -> None:
    with host.client(token=False) as client:
        anonymous = client.get("/health")
    with host.client() as client:
        full = client.get("/health")
    assert anonymous.status_code == 200 and anonymous.json() == {"alive": True}
    assert "problems" in full.json()  # no workers run here, so it is 503 with the reasons


def test_a_chat_id_of_another_platform_is_refused(host: RunningHost) -> None:
    """Owner-authored text must not land in a Telegram or Discord chat (past its allowlist)."""
    before = host.messages()
    with host.client() as client:
        response = client.post("/api/chat", json={"text": "pay the bill", "chat_id": "tg:-100123"})
        replies = client.get("/api/chat/replies", params={"chat_id": "dc:1"})
    assert response.status_code == 400
    assert response.json()["field"] == "chat_id"
    assert replies.status_code == 400
    assert host.messages() == before
    assert "tg:-100123" not in host.chats()
    assert any(row["detail"]["field"] == "chat_id" for row in host.audit("envelope.rejected"))
    assert host.serving()


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("deep nesting", b'{"text": "x", "client_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("huge integer", b'{"text": "x", "client_id": ' + b"9" * 100_000 + b"}"),
        ("text not a string", b'{"text": 5}'),
        ("client_id an object", b'{"text": "x", "client_id": {"a": 1}}'),
        ("a list, not an object", b'["text"]'),
        ("not UTF-8", b'{"text": "\xff\xfe"}'),
        ("unknown field", b'{"text": "x", "is_from_me": false}'),
    ],
)
def test_hostile_bodies_get_a_400_an_audit_row_and_nothing_stored(
    host: RunningHost, name: str, body: bytes
) -> None:
    before, audited = host.messages(), len(host.audit("envelope.rejected"))
    with host.client() as client:
        response = client.post("/api/chat", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, (name, response.status_code, response.text[:300])
    assert response.json()["error"]
    assert len(host.audit("envelope.rejected")) == audited + 1
    assert host.messages() == before
    assert host.serving()


@pytest.mark.parametrize("wait", ["nan", "inf", "-inf", "-1", "1e9", "31", "soon"])
def test_non_finite_or_out_of_range_wait_is_a_400(host: RunningHost, wait: str) -> None:
    # The client timeout only guards against a hang (today's ``wait=nan`` never returns).
    with host.client(timeout=5) as client:
        response = client.get("/api/chat/replies", params={"after": 0, "wait": wait})
    assert response.status_code == 400
    assert "wait" in response.json()["error"]


@pytest.mark.parametrize("after", ["-1", "1e3", "9" * 5000, str(2**63)])
def test_a_bad_after_is_a_400(host: RunningHost, after: str) -> None:
    with host.client(timeout=5) as client:
        response = client.get("/api/chat/replies", params={"after": after})
    assert response.status_code == 400
    assert "after" in response.json()["error"]


def _stream_upload(host: RunningHost, *, declare_length: bool, total: int = 300 * MIB) -> tuple[int, bytes]:
    """Send a ``POST /api/chat`` body of ``total`` bytes in 1 MiB writes over a raw socket until
    the host stops taking it; the bytes sent and whatever the host answered."""
    token = host_headers(host.data).get("Authorization", "Bearer none")
    head = [
        "POST /api/chat HTTP/1.1",
        f"Host: 127.0.0.1:{host.port}",
        f"Authorization: {token}",
        "Content-Type: application/json",
        f"Content-Length: {total}" if declare_length else "Transfer-Encoding: chunked",
    ]
    chunk = b'{"text": "' + b"a" * (MIB - 10)
    sent = 0
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            while sent < total:
                data = chunk if declare_length else b"%x\r\n%s\r\n" % (len(chunk), chunk)
                sock.sendall(data)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the host answered and closed, or stopped reading: either way it refused
        answer = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while len(answer) < 4096:
                part = sock.recv(4096)
                if not part:
                    break
                answer += part
    return sent, answer


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_a_300_mib_body_is_refused_early_without_growing_the_host(
    tmp_path: Path, declare_length: bool
) -> None:
    # A host of its own: memory a previous test made the allocator keep would hide growth.
    with running_host(tmp_path) as host:
        _refuses_a_huge_body(host, declare_length)


def _refuses_a_huge_body(host: RunningHost, declare_length: bool) -> None:
    before_rss, before_msgs = host.rss(), host.messages()
    sent, answer = _stream_upload(host, declare_length=declare_length)
    grew = host.rss() - before_rss
    assert grew < 16 * MIB, f"the host grew by {grew / MIB:.0f} MiB for a refused body"
    assert sent < 300 * MIB or answer.startswith(b"HTTP/1.1 413"), answer[:200]
    if answer:
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert host.messages() == before_msgs
    assert host.serving()


def test_refusals_are_audited_but_a_flood_cannot_fill_the_audit_table(host: RunningHost) -> None:
    with host.client(token=False) as client:
        for _ in range(200):
            assert client.get("/status", headers={"Authorization": "Bearer nope"}).status_code == 401
    rows = [r for r in host.audit("http.refused") if r["detail"]["code"] == "bad_token"]
    assert 1 <= len(rows) <= 20


def test_data_files_are_private_after_a_real_boot_under_umask_022(host: RunningHost) -> None:
    with host.client() as client:  # one stored message makes the host publish to the broker
        assert client.post("/api/chat", json={"text": "hello", "client_id": "modes"}).status_code == 202
    data = host.data
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    expected = [
        "microclaw.db",
        "broker.db",
        "sandbox-results.db",
        "local-chat.db",
        "http-token",
        "microclaw-host.pid",
    ]
    present = {p.name for p in data.iterdir() if p.is_file()}
    assert set(expected) <= present, present
    loose = {
        p.name: oct(stat.S_IMODE(p.stat().st_mode))
        for p in data.iterdir()
        if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077
    }
    assert loose == {}, f"readable by others: {loose}"
    assert {"microclaw.db-wal", "microclaw.db-shm"} <= present  # the side files, checked above
