"""A fake Telegram Bot API on 127.0.0.1, speaking the HTTP wire protocol python-telegram-bot uses.

Runs an aiohttp server in its own thread (so tests, the host process and the outbound worker
can all reach it). Bot API semantics that matter to MicroClaw are real: ``getUpdates`` returns
updates with ``update_id >= offset``, an offset *confirms* (deletes) every update below it,
and an empty queue is long-polled for ``timeout`` seconds. ``sendMessage`` records what the bot
said with a server timestamp. Errors are scripted per method (``fail``) or per chat
(``fail_chat``) with Telegram's real error bodies (429 with ``parameters.retry_after``, 403,
400 "chat not found").
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.integration.connectors.loopback_server import LoopbackServer

BOT_ID = 7000001
BOT_USERNAME = "andy_test_bot"


@dataclass
class Sent:
    chat_id: int | str
    text: str
    message_id: int
    at: float  # time.monotonic() when the server received it


@dataclass
class _Failure:
    status: int
    description: str
    parameters: dict[str, Any] | None = None


@dataclass
class _State:
    updates: list[dict[str, Any]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    actions: list[tuple[int | str, str]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    confirmed: int = 0  # highest offset a client confirmed
    failures: dict[str, list[_Failure]] = field(default_factory=dict)
    chat_failures: dict[int | str, _Failure] = field(default_factory=dict)
    drop_next_polls: int = 0
    ignore_next_confirm: bool = False


def _error(failure: _Failure) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": failure.status, "description": failure.description}
    if failure.parameters:
        body["parameters"] = failure.parameters
    return web.json_response(body, status=failure.status)


class FakeTelegram(LoopbackServer):
    """The Bot API for one bot token. Thread-safe; every public method may be called from tests."""

    thread_name = "fake-telegram"

    def __init__(self, token: str = "123456:fake-token", *, username: str = BOT_USERNAME) -> None:
        self.token = token
        self.username = username
        self._state = _State()
        self._lock = threading.Lock()
        self._update_ids = itertools.count(1000)
        self._message_ids = itertools.count(1)
        super().__init__()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    def restart(self, down_for: float = 0.0) -> None:
        """Drop every connection and listener, stay down ``down_for`` s, listen on the same port."""
        self._call(self._shutdown())
        time.sleep(down_for)
        self._call(self._serve())

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)

    # --- what tests script and inspect ----------------------------------------------------

    def push_message(
        self,
        chat_id: int,
        text: str | None = None,
        *,
        chat_type: str = "supergroup",
        title: str = "Test group",
        from_id: int = 501,
        first_name: str = "Alice",
        entities: list[dict[str, Any]] | None = None,
        reply_to: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Queue an update carrying a new message; returns the update."""
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = first_name
        else:
            chat["title"] = title
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": from_id, "is_bot": False, "first_name": first_name},
            **extra,
        }
        if text is not None:
            message["text"] = text
        if entities:
            message["entities"] = entities
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        return self.push_update({"message": message})

    def push_update(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            update = {"update_id": next(self._update_ids), **body}
            self._state.updates.append(update)
        return update

    def fail(self, method: str, status: int, description: str, *, times: int = 1, **parameters: Any) -> None:
        """The next ``times`` calls of ``method`` fail with this Bot API error."""
        with self._lock:
            queue = self._state.failures.setdefault(method.lower(), [])
            queue.extend(_Failure(status, description, parameters or None) for _ in range(times))

    def fail_chat(self, chat_id: int | str, status: int, description: str) -> None:
        """Every send to ``chat_id`` fails (a blocked bot, a deleted chat)."""
        with self._lock:
            self._state.chat_failures[chat_id] = _Failure(status, description)

    def drop_next_polls(self, count: int = 1) -> None:
        """The next ``count`` getUpdates calls lose their connection without an answer."""
        with self._lock:
            self._state.drop_next_polls += count

    def ignore_next_confirm(self) -> None:
        """The next offset confirmation is lost (as if the client died before it arrived)."""
        with self._lock:
            self._state.ignore_next_confirm = True

    @property
    def sent(self) -> list[Sent]:
        with self._lock:
            return list(self._state.sent)

    @property
    def actions(self) -> list[tuple[int | str, str]]:
        with self._lock:
            return list(self._state.actions)

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by any client."""
        with self._lock:
            return list(self._state.updates)

    def calls(self, method: str | None = None) -> list[tuple[str, dict[str, Any], float]]:
        with self._lock:
            return [c for c in self._state.calls if method is None or c[0] == method.lower()]

    # --- the Bot API ----------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            try:
                params[key] = json.loads(str(value))  # PTB JSON-encodes non-string values
            except ValueError:
                params[key] = str(value)
        return params

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(_Failure(401, "Unauthorized"))
        method = request.match_info["method"].lower()
        params = await self._params(request)
        with self._lock:
            self._state.calls.append((method, params, time.monotonic()))
            queued = self._state.failures.get(method)
            failure = queued.pop(0) if queued else None
        if failure is not None:
            return _error(failure)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return _error(_Failure(404, "Not Found"))
        return await handler(request, params)

    def _me(self) -> dict[str, Any]:
        return {"id": BOT_ID, "is_bot": True, "first_name": "Andy", "username": self.username}

    async def _m_getme(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        return web.json_response({"ok": True, "result": self._me()})

    async def _m_deletewebhook(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        return web.json_response({"ok": True, "result": True})

    async def _m_getupdates(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        with self._lock:
            if self._state.drop_next_polls:
                self._state.drop_next_polls -= 1
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)
            if offset and self._state.ignore_next_confirm and offset > self._state.confirmed:
                self._state.ignore_next_confirm = False
            elif offset:
                # An offset confirms every update below it: they are gone for good.
                self._state.updates = [u for u in self._state.updates if u["update_id"] >= offset]
                self._state.confirmed = max(self._state.confirmed, offset)
        while True:
            with self._lock:
                ready = [u for u in self._state.updates if u["update_id"] >= offset][:limit]
            if ready or time.monotonic() >= deadline:
                return web.json_response({"ok": True, "result": ready})
            await asyncio.sleep(0.02)

    async def _m_sendmessage(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        chat_id = params["chat_id"]
        with self._lock:
            failure = self._state.chat_failures.get(chat_id)
        if failure is not None:
            return _error(failure)
        text = str(params["text"])
        if len(text) > 4096:
            return _error(_Failure(400, "Bad Request: message is too long"))
        message_id = next(self._message_ids)
        with self._lock:
            self._state.sent.append(Sent(chat_id, text, message_id, time.monotonic()))
        chat_type = "supergroup" if isinstance(chat_id, int) and chat_id < 0 else "private"
        result = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": chat_type, "title": "chat", "first_name": "chat"},
            "from": self._me(),
            "text": text,
        }
        return web.json_response({"ok": True, "result": result})

    async def _m_sendchataction(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        chat_id = params["chat_id"]
        with self._lock:
            failure = self._state.chat_failures.get(chat_id)
            if failure is None:
                self._state.actions.append((chat_id, str(params["action"])))
        if failure is not None:
            return _error(failure)
        return web.json_response({"ok": True, "result": True})
