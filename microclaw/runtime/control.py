"""The localhost HTTP surface of the host: health, status and the local chat channel.

Routes (JSON):
- ``GET /health``: without a token, 200 ``{"alive": true}`` and nothing else (a liveness probe);
  with the token, 200 ``{"ok": true}`` when healthy, 503 with ``problems`` otherwise (a store
  fault, such as "disk full" or "database busy", is one of them).
- ``GET /status``: the full status snapshot (see `microclaw.runtime.status`).
- ``GET /metrics``: Prometheus text, computed from the database per scrape
  (`microclaw.runtime.metrics`); behind the token like everything but a bare ``/health``.
- ``POST /api/chat`` ``{"text", "chat_id"?, "client_id"?, "sender_name"?}``: a local message;
  answers 202 once it is durable, 400 with ``error`` and ``field`` for bad input (audited),
  503 with ``error`` giving the reason ("disk full: ...", "database busy: ...") when it cannot
  be stored now (nothing was acknowledged; send it again later).
- ``GET /api/chat/replies?after=ID&chat_id=C&wait=S``: replies with id > ``after``, waiting up
  to ``wait`` seconds (0-30) for the first one.

A loopback port is not a boundary: any local user and any web page the user visits can reach
it (a page by a cross-site "simple" request, or by DNS rebinding a name of its own to
127.0.0.1). So every request passes `check_request` first, in this order, before any route runs
or any body is read:

| check | refused with |
|---|---|
| ``Host`` is a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``, any port) | 403 (DNS rebinding) |
| no ``Origin`` header, ``Sec-Fetch-Site`` not ``cross-site``/``same-site`` | 403 (a web page) |
| ``Authorization: Bearer <the per-install token>`` (constant-time compare); only a bare
  ``GET /health`` may come without it, and gets liveness only | 401 |
| a body is ``Content-Type: application/json`` | 415 |
| ``Content-Length``, if sent, is a number no larger than 1 MiB | 400 / 413 |

The body is then read as a stream and refused (413) as soon as it passes 1 MiB, so an endless
chunked upload costs no more memory than the limit. Each refusal answers ``{"error", "code"}``
and is handed to ``on_refuse`` (the host audits it as ``http.refused``, at most
`RefusalThrottle.burst` rows per code and minute, so a page cannot flood the audit table).
``chat_id`` may only name a local chat. The token is ``<data_dir>/http-token`` (0600, created
by the host at first start, read by ``microclaw chat`` and ``microclaw-host``).

It binds to loopback only (settings refuse anything else) and has no other routes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from microclaw.connectors.local import LocalConnector
from microclaw.envelope import Envelope
from microclaw.errors import EnvelopeError, TransientConnectorError, TransientStoreError

MAX_BODY_BYTES = 1024 * 1024
MAX_WAIT_S = 30.0
MAX_REPLY_ID = 2**63 - 1
# The only route a client may call without the token, and what it then learns: liveness.
OPEN_PATHS = frozenset({"/health"})
_LOOPBACK_HOST = re.compile(r"^(?:127\.0\.0\.1|localhost|\[::1\])(?::\d{1,5})?$", re.IGNORECASE)
_TOO_LARGE = f"the body is larger than {MAX_BODY_BYTES} bytes"
_TOKEN_HINT = "the token is in <data_dir>/http-token"
_CHAT_FIELDS = frozenset({"text", "chat_id", "client_id", "sender_name"})


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: the HTTP status, a stable ``code`` and a sentence."""

    status: int
    code: str
    reason: str
    path: str = ""

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse({"error": self.reason, "code": self.code}, self.status, headers=headers)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def check_request(method: str, path: str, headers: Mapping[str, str], token: str) -> Refusal | None:
    """The surface's rules (the table in the module docstring) for one request's head; None
    when it may proceed. Pure: no I/O, the body is not looked at."""
    host = headers.get("host", "")
    if not _LOOPBACK_HOST.fullmatch(host):
        return Refusal(
            403,
            "bad_host",
            f"Host {host[:100]!r} is not a loopback name; this surface answers only to "
            "127.0.0.1, localhost or [::1]",
            path,
        )
    if "origin" in headers:
        return Refusal(403, "cross_site", "requests from web pages are refused (Origin header present)", path)
    if headers.get("sec-fetch-site", "").lower() in {"cross-site", "same-site"}:
        return Refusal(403, "cross_site", "requests from web pages are refused (Sec-Fetch-Site)", path)
    authorization = headers.get("authorization")
    if authorization is None:
        if not (path in OPEN_PATHS and method in {"GET", "HEAD"}):
            return Refusal(401, "no_token", f"missing 'Authorization: Bearer <token>' ({_TOKEN_HINT})", path)
    else:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode("utf-8", "replace"), token.encode("utf-8")
        ):
            return Refusal(401, "bad_token", f"the bearer token is wrong ({_TOKEN_HINT})", path)
    if method not in {"GET", "HEAD", "OPTIONS"}:
        if _media_type(headers.get("content-type", "")) != "application/json":
            return Refusal(415, "not_json", "the body must be sent as Content-Type: application/json", path)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return Refusal(400, "bad_length", "Content-Length is not a number", path)
            if int(length) > MAX_BODY_BYTES:
                return Refusal(413, "too_large", _TOO_LARGE, path)
    return None


class RefusalThrottle:
    """At most ``burst`` audited refusals per code in any ``window_s``; the rest are counted and
    the next audited one carries how many were left out. ``clock`` is monotonic seconds."""

    def __init__(
        self, *, burst: int = 20, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[str, list[float]] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, code: str) -> int | None:
        """None when this refusal should not be audited, else how many were suppressed before it."""
        now = self.clock()
        recent = [t for t in self._seen.get(code, []) if now - t < self.window_s]
        if len(recent) >= self.burst:
            self._seen[code] = recent
            self._suppressed[code] = self._suppressed.get(code, 0) + 1
            return None
        recent.append(now)
        self._seen[code] = recent
        return self._suppressed.pop(code, 0)


class _Guard:
    """ASGI middleware applying `check_request` to every HTTP request before the app sees it."""

    def __init__(self, app: ASGIApp, token: str, refuse: Callable[[Refusal], Awaitable[None]]) -> None:
        self.app = app
        self.token = token
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no route speaks it: close before the app sees it
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = check_request(scope["method"], scope["path"], headers, self.token)
        if refusal is not None:
            await self.refuse(refusal)
            await refusal.response()(scope, receive, send)
            return
        scope.setdefault("state", {})["authenticated"] = "authorization" in headers
        await self.app(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes ``limit`` bytes (never buffered beyond)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _chat_request(body: bytes) -> dict[str, str]:
    """The JSON object of a ``POST /api/chat``; `EnvelopeError` for anything else."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise EnvelopeError("the body is not valid UTF-8") from None
    except RecursionError:
        raise EnvelopeError("the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        raise EnvelopeError(f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise EnvelopeError("the body must be a JSON object with a string 'text'", field="text")
    unknown = sorted(set(data) - _CHAT_FIELDS)
    if unknown:
        raise EnvelopeError(f"unknown field {unknown[0][:64]!r}", field=unknown[0][:64])
    if not isinstance(data.get("text"), str):
        raise EnvelopeError("the body must be a JSON object with a string 'text'", field="text")
    for name in ("chat_id", "client_id", "sender_name"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise EnvelopeError(f"{name} must be a string", field=name)
    return {k: v for k, v in data.items() if v is not None}


def _bad_query(message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": "bad_query"}, status_code=400)


def create_control_app(
    *,
    status: Callable[[], Awaitable[dict[str, Any]]],
    problems: Callable[[dict[str, Any]], list[str]],
    local: LocalConnector | None,
    on_reject: Callable[[EnvelopeError], Awaitable[None]],
    token: str,
    on_refuse: Callable[[Refusal], Awaitable[None]],
    metrics: Callable[[], Awaitable[bytes]] | None = None,
) -> ASGIApp:
    """The Starlette app behind its guard; every dependency is injected by the host."""

    async def metrics_route(_: Request) -> Response:
        if metrics is None:
            return JSONResponse({"error": "metrics are not served by this process"}, status_code=404)
        return Response(await metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def health(request: Request) -> JSONResponse:
        if not request.scope["state"].get("authenticated"):
            return JSONResponse({"alive": True})
        try:
            snapshot = await status()
        except TransientStoreError as exc:
            return JSONResponse({"ok": False, "problems": [str(exc)]}, status_code=503)
        found = problems(snapshot)
        return JSONResponse({"ok": not found, "problems": found}, status_code=200 if not found else 503)

    async def status_route(_: Request) -> JSONResponse:
        try:
            return JSONResponse(await status())
        except TransientStoreError as exc:
            return JSONResponse({"error": str(exc), "code": "store_unavailable"}, status_code=503)

    async def chat(request: Request) -> JSONResponse:
        if local is None:
            return JSONResponse({"error": "the local chat channel is disabled"}, status_code=503)
        try:
            body = await _read_body(request, MAX_BODY_BYTES)
        except _BodyTooLarge:
            refusal = Refusal(413, "too_large", _TOO_LARGE, "/api/chat")
            await on_refuse(refusal)
            return refusal.response()
        try:
            data = _chat_request(body)
            envelope: Envelope = local.build_envelope(
                data["text"],
                chat_id=data.get("chat_id") or None,
                sender_name=data.get("sender_name") or "You",
                client_id=data.get("client_id") or None,
            )
        except EnvelopeError as error:
            await on_reject(error)
            return JSONResponse({"error": str(error), "field": error.field}, status_code=400)
        try:
            await local.submit(envelope)
        except TransientConnectorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        except TransientStoreError as exc:
            return JSONResponse({"error": str(exc), "code": "store_unavailable"}, status_code=503)
        return JSONResponse({"message_id": envelope.message_id, "chat_id": envelope.chat_id}, status_code=202)

    async def replies(request: Request) -> JSONResponse:
        if local is None:
            return JSONResponse({"error": "the local chat channel is disabled"}, status_code=503)
        params = request.query_params
        raw_after, raw_wait = params.get("after", "0"), params.get("wait", "0")
        digits = raw_after.isascii() and raw_after.isdigit() and len(raw_after) <= 19
        if not digits or int(raw_after) > MAX_REPLY_ID:
            return _bad_query(f"after must be a reply id (an integer from 0 to {MAX_REPLY_ID})")
        after = int(raw_after)
        try:
            wait = float(raw_wait) if len(raw_wait) <= 32 else math.nan
        except ValueError:
            wait = math.nan
        if not math.isfinite(wait) or not 0 <= wait <= MAX_WAIT_S:
            return _bad_query(f"wait must be a number of seconds from 0 to {MAX_WAIT_S:.0f}")
        chat_id = params.get("chat_id") or None
        if chat_id is not None and (len(chat_id) > 512 or not local.owns(chat_id)):
            return _bad_query("chat_id must be a local chat (local:<name>)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            items = await asyncio.to_thread(local.replies, after, chat_id=chat_id)
            if items or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        return JSONResponse(
            {
                "replies": [
                    {"id": i.id, "chat_id": i.chat_id, "text": i.text, "ts_ms": i.created_at_ms}
                    for i in items
                ]
            }
        )

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/status", status_route),
            Route("/metrics", metrics_route),
            Route("/api/chat", chat, methods=["POST"]),
            Route("/api/chat/replies", replies),
        ]
    )
    return _Guard(app, token, on_refuse)
