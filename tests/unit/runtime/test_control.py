"""microclaw/runtime/control.py: the guard's rules as a table, the audit throttle on a fake clock,
and the app itself through httpx's in-process ASGI transport (a real LocalConnector and
mailbox; no network). Attacks on the real host process: tests/e2e/test_host_http_attacks.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from microclaw.connectors.local import LocalConnector
from microclaw.connectors.mailbox import Mailbox
from microclaw.envelope import Envelope
from microclaw.errors import EnvelopeError
from microclaw.runtime.control import (
    MAX_BODY_BYTES,
    Refusal,
    RefusalThrottle,
    check_request,
    create_control_app,
)

T = TypeVar("T")
TOKEN = "t" * 43
OK_HEAD = {"host": "127.0.0.1:8765", "authorization": f"Bearer {TOKEN}"}


def head(**changes: str | None) -> dict[str, str]:
    out = {**OK_HEAD, **{k.replace("_", "-"): v for k, v in changes.items()}}
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("GET", "/status", head(), None),
        ("GET", "/status", head(host="localhost:8765"), None),
        ("GET", "/status", head(host="[::1]:8765"), None),
        ("GET", "/status", head(host="LOCALHOST"), None),
        ("GET", "/status", head(host="evil.example"), (403, "bad_host")),
        ("GET", "/status", head(host="127.0.0.1.evil.example"), (403, "bad_host")),
        ("GET", "/status", head(host="localhost:8765@evil"), (403, "bad_host")),
        ("GET", "/status", head(host=None), (403, "bad_host")),
        ("GET", "/status", head(origin="https://evil.example"), (403, "cross_site")),
        ("GET", "/status", head(origin="null"), (403, "cross_site")),
        ("GET", "/status", head(sec_fetch_site="cross-site"), (403, "cross_site")),
        ("GET", "/status", head(sec_fetch_site="same-site"), (403, "cross_site")),
        ("GET", "/status", head(sec_fetch_site="none"), None),
        ("GET", "/status", head(authorization=None), (401, "no_token")),
        ("GET", "/status", head(authorization=f"Basic {TOKEN}"), (401, "bad_token")),
        ("GET", "/status", head(authorization=f"Bearer {TOKEN}x"), (401, "bad_token")),
        ("GET", "/status", head(authorization="Bearer \u00e9"), (401, "bad_token")),
        ("GET", "/health", head(authorization=None), None),
        ("POST", "/health", head(authorization=None), (401, "no_token")),
        ("POST", "/api/chat", head(content_type="application/json"), None),
        ("POST", "/api/chat", head(content_type="Application/JSON; charset=utf-8"), None),
        ("POST", "/api/chat", head(content_type="text/plain"), (415, "not_json")),
        ("POST", "/api/chat", head(), (415, "not_json")),
        (
            "POST",
            "/api/chat",
            head(content_type="application/json", content_length="12x"),
            (400, "bad_length"),
        ),
        (
            "POST",
            "/api/chat",
            head(content_type="application/json", content_length=str(MAX_BODY_BYTES + 1)),
            (413, "too_large"),
        ),
        ("POST", "/api/chat", head(authorization=None, content_type="text/plain"), (401, "no_token")),
    ],
)
def test_check_request(
    method: str, path: str, headers: dict[str, str], expected: tuple[int, str] | None
) -> None:
    refusal = check_request(method, path, headers, TOKEN)
    assert (refusal.status, refusal.code) == expected if refusal else expected is None


def test_throttle_audits_a_burst_per_code_then_counts_what_it_left_out() -> None:
    now = [0.0]
    throttle = RefusalThrottle(burst=3, window_s=60, clock=lambda: now[0])
    assert [throttle.admit("no_token") for _ in range(5)] == [0, 0, 0, None, None]
    assert throttle.admit("bad_host") == 0  # its own budget
    now[0] = 61.0
    assert throttle.admit("no_token") == 2  # the first row after a flood says how many it hid
    assert throttle.admit("no_token") == 0


class Recorder:
    def __init__(self) -> None:
        self.rejected: list[EnvelopeError] = []
        self.refused: list[Refusal] = []
        self.stored: list[Envelope] = []

    async def on_reject(self, error: EnvelopeError) -> None:
        self.rejected.append(error)

    async def on_refuse(self, refusal: Refusal) -> None:
        self.refused.append(refusal)

    async def deliver(self, envelope: Envelope) -> None:
        self.stored.append(envelope)


Scenario = Callable[[httpx.AsyncClient, Recorder, LocalConnector], Awaitable[T]]


def serve(tmp_path: Path, scenario: Scenario[T]) -> tuple[T, Recorder]:
    """Run ``scenario`` against the app with a listening local channel; its result and what the
    app reported (stored envelopes, rejections, refusals)."""
    recorder = Recorder()

    async def status() -> dict[str, Any]:
        return {"secret": "status"}

    async def main() -> T:
        local = LocalConnector(Mailbox(tmp_path / "local-chat.db"))
        app = create_control_app(
            status=status,
            problems=lambda _: ["router: no live worker"],
            local=local,
            on_reject=recorder.on_reject,
            token=TOKEN,
            on_refuse=recorder.on_refuse,
        )
        listening = asyncio.create_task(local.listen(recorder.deliver))
        await asyncio.sleep(0)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://127.0.0.1:8765",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as http:
                return await scenario(http, recorder, local)
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening

    return asyncio.run(main()), recorder


def test_health_without_a_token_tells_only_liveness(tmp_path: Path) -> None:
    async def scenario(http: httpx.AsyncClient, *_: Any) -> list[httpx.Response]:
        full = await http.get("/health")
        empty = await http.get("/health", headers={"Authorization": ""})
        del http.headers["Authorization"]
        return [full, empty, await http.get("/health")]

    (full, empty, bare), _ = serve(tmp_path, scenario)
    assert full.status_code == 503 and full.json()["problems"] == ["router: no live worker"]
    assert empty.status_code == 401  # an empty Authorization header is a wrong token
    assert bare.status_code == 200 and bare.json() == {"alive": True}


def test_a_refusal_is_reported_and_explained(tmp_path: Path) -> None:
    async def scenario(http: httpx.AsyncClient, *_: Any) -> list[httpx.Response]:
        return [
            await http.get("/status", headers={"Host": "evil.example"}),
            await http.get("/status", headers={"Authorization": "Bearer"}),
        ]

    (rebound, missing), recorder = serve(tmp_path, scenario)
    assert rebound.status_code == 403
    assert rebound.json()["code"] == "bad_host" and "loopback" in rebound.json()["error"]
    assert "secret" not in rebound.text
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert [r.code for r in recorder.refused] == ["bad_host", "bad_token"]


def test_a_local_message_is_stored_and_acknowledged(tmp_path: Path) -> None:
    async def scenario(http: httpx.AsyncClient, *_: Any) -> httpx.Response:
        return await http.post("/api/chat", json={"text": "hi", "client_id": "c1"})

    response, recorder = serve(tmp_path, scenario)
    assert response.status_code == 202
    assert response.json() == {"message_id": "local:main:c1", "chat_id": "local:main"}
    assert [(e.payload.text, e.payload.is_from_me) for e in recorder.stored] == [("hi", True)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"text": 5}', "text"),
        (b'{"text": "x", "chat_id": "tg:-100123"}', "chat_id"),
        (b'{"text": "x", "chat_id": "dc:1"}', "chat_id"),
        (b'{"text": "x", "chat_id": 7}', "chat_id"),
        (b'{"text": "x", "client_id": ["a"]}', "client_id"),
        (b'{"text": "x", "sender": "someone else"}', "sender"),
        (b"[]", "text"),
        (b"[" * 50_000 + b"]" * 50_000, None),
        (b'{"text": "x", "client_id": ' + b"1" * 5000 + b"}", None),
        (b"\xff", None),
        (b"", None),
    ],
    ids=[
        "text-int",
        "telegram-chat",
        "discord-chat",
        "chat-id-int",
        "client-id-list",
        "unknown-field",
        "list",
        "deep",
        "huge-int",
        "not-utf8",
        "empty",
    ],
)
def test_bad_chat_bodies_are_400_audited_and_not_stored(
    tmp_path: Path, body: bytes, field: str | None
) -> None:
    async def scenario(http: httpx.AsyncClient, *_: Any) -> httpx.Response:
        return await http.post("/api/chat", content=body, headers={"Content-Type": "application/json"})

    response, recorder = serve(tmp_path, scenario)
    assert response.status_code == 400
    assert response.json()["field"] == field and response.json()["error"]
    assert len(recorder.rejected) == 1 and recorder.stored == []


def test_a_body_past_the_limit_is_refused_while_streaming(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: only counting can stop it
        for _ in range(3):
            yield b" " * (MAX_BODY_BYTES // 2 + 1)

    async def scenario(http: httpx.AsyncClient, *_: Any) -> httpx.Response:
        return await http.post("/api/chat", content=chunks(), headers={"Content-Type": "application/json"})

    response, recorder = serve(tmp_path, scenario)
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert [r.code for r in recorder.refused] == ["too_large"] and recorder.stored == []


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"wait": "nan"}, "wait"),
        ({"wait": "inf"}, "wait"),
        ({"wait": "-1"}, "wait"),
        ({"wait": "1e9"}, "wait"),
        ({"wait": "30.5"}, "wait"),
        ({"wait": "1" * 40}, "wait"),
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"after": "9" * 5000}, "after"),
        ({"after": str(2**63)}, "after"),
        ({"chat_id": "tg:1"}, "chat_id"),
    ],
)
def test_bad_reply_queries_are_400(tmp_path: Path, params: dict[str, str], word: str) -> None:
    async def scenario(http: httpx.AsyncClient, *_: Any) -> httpx.Response:
        return await http.get("/api/chat/replies", params=params)

    response, _ = serve(tmp_path, scenario)
    assert response.status_code == 400 and word in response.json()["error"]


def test_replies_are_read_after_an_id(tmp_path: Path) -> None:
    async def scenario(http: httpx.AsyncClient, _: Recorder, local: LocalConnector) -> list[Any]:
        await local.send("local:main", "one", idempotency_key="k1")
        await local.send("local:main", "two", idempotency_key="k2")
        first = (await http.get("/api/chat/replies", params={"after": 0, "wait": "0"})).json()["replies"]
        later = await http.get(
            "/api/chat/replies", params={"after": first[-1]["id"], "chat_id": "local:main"}
        )
        return [first, later.json()]

    (first, later), _ = serve(tmp_path, scenario)
    assert [r["text"] for r in first] == ["one", "two"]
    assert later == {"replies": []}
