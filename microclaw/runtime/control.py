"""The localhost HTTP surface of the host: health, status and the local chat channel.

Routes (JSON):
- ``GET /health``: 200 ``{"ok": true}`` when healthy, 503 with ``problems`` otherwise.
- ``GET /status``: the full status snapshot (see `microclaw.runtime.status`).
- ``POST /api/chat`` ``{"text", "chat_id"?, "client_id"?, "sender_name"?}``: a local message;
  answers 202 once it is durable, 400 with ``error`` and ``field`` for bad input (audited).
- ``GET /api/chat/replies?after=ID&chat_id=C&wait=S``: replies with id > ``after``, waiting up
  to ``wait`` seconds (max 30) for the first one.

It binds to loopback only (settings refuse anything else) and has no other routes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from microclaw.connectors.local import LocalConnector
from microclaw.envelope import Envelope
from microclaw.errors import EnvelopeError, TransientConnectorError

MAX_BODY_BYTES = 1024 * 1024
MAX_WAIT_S = 30.0


def create_control_app(
    *,
    status: Callable[[], Awaitable[dict[str, Any]]],
    problems: Callable[[dict[str, Any]], list[str]],
    local: LocalConnector | None,
    on_reject: Callable[[EnvelopeError], Awaitable[None]],
) -> Starlette:
    """The Starlette app; every dependency is injected by the host."""

    async def health(_: Request) -> JSONResponse:
        snapshot = await status()
        found = problems(snapshot)
        return JSONResponse({"ok": not found, "problems": found}, status_code=200 if not found else 503)

    async def status_route(_: Request) -> JSONResponse:
        return JSONResponse(await status())

    async def chat(request: Request) -> JSONResponse:
        if local is None:
            return JSONResponse({"error": "the local chat channel is disabled"}, status_code=503)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        try:
            data = json.loads(body.decode("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("text"), str):
                raise EnvelopeError("body must be a JSON object with a string 'text'", field="text")
            envelope: Envelope = local.build_envelope(
                data["text"],
                chat_id=data.get("chat_id") or None,
                sender_name=str(data.get("sender_name") or "You"),
                client_id=data.get("client_id") or None,
            )
        except (UnicodeDecodeError, ValueError) as exc:
            error = exc if isinstance(exc, EnvelopeError) else EnvelopeError(f"invalid request: {exc}")
            await on_reject(error)
            return JSONResponse({"error": str(error), "field": error.field}, status_code=400)
        try:
            await local.submit(envelope)
        except TransientConnectorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse({"message_id": envelope.message_id, "chat_id": envelope.chat_id}, status_code=202)

    async def replies(request: Request) -> JSONResponse:
        if local is None:
            return JSONResponse({"error": "the local chat channel is disabled"}, status_code=503)
        try:
            after = int(request.query_params.get("after", "0"))
            wait = min(float(request.query_params.get("wait", "0")), MAX_WAIT_S)
        except ValueError:
            return JSONResponse({"error": "after must be an integer and wait a number"}, status_code=400)
        chat_id = request.query_params.get("chat_id") or None
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

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/status", status_route),
            Route("/api/chat", chat, methods=["POST"]),
            Route("/api/chat/replies", replies),
        ]
    )
