"""A fake Discord on 127.0.0.1: REST (``/api/v10``) and the gateway WebSocket, as discord.py speaks them.

Runs an aiohttp server in its own thread. The gateway does HELLO, IDENTIFY -> READY (+ one
GUILD_CREATE), heartbeats, RESUME -> replay of the events the session missed, then RESUMED,
and dispatches MESSAGE_CREATE for messages pushed by tests. REST serves ``/users/@me``, channel
message history (``after``/``limit``, newest first like Discord) and message creation, with
Discord's error bodies: 429 with ``retry_after`` plus the ``Via`` header (without it discord.py
takes a 429 for a Cloudflare ban), 403 Missing Access, 404 Unknown Channel. Point discord.py
at it with `FakeDiscord.patch` (``Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY``).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from tests.integration.connectors.loopback_server import LoopbackServer

DISCORD_EPOCH_MS = 1420070400000
BOT_ID = 900000000000000001
GUILD_ID = 800000000000000001


def _user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name.lower(),
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
    }


@dataclass
class Sent:
    channel_id: int
    content: str
    message_id: int
    at: float  # time.monotonic() when the server received it


@dataclass
class _Session:
    events: list[dict[str, Any]] = field(default_factory=list)  # every dispatch, by seq
    ws: web.WebSocketResponse | None = None


@dataclass
class _Failure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class FakeDiscord(LoopbackServer):
    """One bot, one guild, any number of channels. Thread-safe public methods."""

    thread_name = "fake-discord"

    def __init__(self, token: str = "fake-discord-token") -> None:
        self.token = token
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self.channels: dict[int, dict[str, Any]] = {}
        self.history: dict[int, list[dict[str, Any]]] = {}
        self._sent: list[Sent] = []
        self._typing: list[int] = []
        self._requests: list[tuple[str, str, float]] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._channel_failures: dict[int, _Failure] = {}
        self._sessions: dict[str, _Session] = {}
        self.identifies = 0
        self.resumes = 0
        super().__init__()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway/"

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point discord.py (in this process) at this server."""
        import discord.gateway
        import discord.http
        import yarl

        monkeypatch.setattr(discord.http.Route, "BASE", self.api_base)
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(self.gateway_url))

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/gateway/", self._gateway)
        app.router.add_get("/api/v10/gateway", self._get_gateway)
        app.router.add_get("/api/v10/users/@me", self._me)
        app.router.add_get("/api/v10/oauth2/applications/@me", self._application)
        app.router.add_post("/api/v10/channels/{channel}/messages", self._create_message)
        app.router.add_get("/api/v10/channels/{channel}/messages", self._list_messages)
        app.router.add_post("/api/v10/channels/{channel}/typing", self._typing_route)
        app.router.add_route("*", "/{tail:.*}", self._unknown)

    async def _close_connections(self) -> None:
        for session in list(self._sessions.values()):
            if session.ws is not None:
                await session.ws.close()

    # --- what tests script and inspect ----------------------------------------------------

    def snowflake(self) -> int:
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._counter) & 0x3FFFFF)

    def add_channel(self, name: str = "general", *, dm: bool = False) -> int:
        channel_id = self.snowflake()
        with self._lock:
            self.channels[channel_id] = {"name": name, "dm": dm}
            self.history[channel_id] = []
        return channel_id

    def push_message(
        self,
        channel_id: int,
        content: str,
        *,
        author_id: int = 700000000000000001,
        author: str = "Alice",
        bot: bool = False,
        mention_bot: bool = False,
        attachments: list[dict[str, Any]] | None = None,
        reply_to: int | None = None,
        dispatch: bool = True,
    ) -> dict[str, Any]:
        """A user posts in a channel: stored in its history and (unless not ``dispatch``) sent
        as MESSAGE_CREATE to every session (live ones now, others on RESUME)."""
        message = self._message(channel_id, content, _user(author_id, author, bot=bot))
        if mention_bot:
            message["mentions"] = [_user(BOT_ID, "Andy", bot=True)]
        if attachments:
            message["attachments"] = attachments
        if reply_to is not None:
            with self._lock:
                original = next(m for m in self.history[channel_id] if m["id"] == str(reply_to))
            message["type"] = 19
            message["message_reference"] = {"message_id": str(reply_to), "channel_id": str(channel_id)}
            message["referenced_message"] = original
        with self._lock:
            self.history[channel_id].append(message)
        if dispatch:
            self._dispatch_all("MESSAGE_CREATE", message)
        return message

    def redispatch(self, message: dict[str, Any]) -> None:
        """Send the same MESSAGE_CREATE again (the platform delivering an event twice)."""
        self._dispatch_all("MESSAGE_CREATE", message)

    def fail(self, route: str, status: int, *, times: int = 1, retry_after: float = 1.0) -> None:
        """The next ``times`` requests to ``route`` (e.g. ``"POST /channels/{id}/messages"``) fail."""
        failure = self._failure(status, retry_after)
        with self._lock:
            self._failures.setdefault(route, []).extend([failure] * times)

    def fail_channel(self, channel_id: int, status: int) -> None:
        with self._lock:
            self._channel_failures[channel_id] = self._failure(status, 0)

    def drop_gateway(self) -> None:
        """Close every gateway connection abruptly (no close frame): the client must reconnect."""
        self._call(self._drop())

    @property
    def sent(self) -> list[Sent]:
        with self._lock:
            return list(self._sent)

    @property
    def typing(self) -> list[int]:
        with self._lock:
            return list(self._typing)

    def requests(self, method: str | None = None) -> list[tuple[str, str, float]]:
        with self._lock:
            return [r for r in self._requests if method is None or r[0] == method]

    @property
    def live_sessions(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions.values() if s.ws is not None and not s.ws.closed)

    # --- payloads -------------------------------------------------------------------------

    def _message(self, channel_id: int, content: str, author: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            channel = self.channels[channel_id]
        message: dict[str, Any] = {
            "id": str(self.snowflake()),
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if not channel["dm"]:
            message["guild_id"] = str(GUILD_ID)
            message["member"] = {"roles": [], "joined_at": message["timestamp"], "deaf": False, "mute": False}
        return message

    def _guild(self) -> dict[str, Any]:
        with self._lock:
            channels = [
                {"id": str(cid), "type": 0, "name": c["name"], "position": i, "permission_overwrites": []}
                for i, (cid, c) in enumerate(self.channels.items())
                if not c["dm"]
            ]
        return {
            "id": str(GUILD_ID),
            "name": "Test Server",
            "unavailable": False,
            "owner_id": "1",
            "member_count": 2,
            "large": False,
            "features": [],
            "roles": [
                {
                    "id": str(GUILD_ID),
                    "name": "@everyone",
                    "permissions": "0",
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                }
            ],
            "emojis": [],
            "stickers": [],
            "channels": channels,
            "threads": [],
            "members": [],
            "voice_states": [],
            "presences": [],
            "joined_at": datetime.now(UTC).isoformat(),
        }

    def _failure(self, status: int, retry_after: float) -> _Failure:
        if status == 429:
            body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
            headers = {"Via": "1.1 google", "Retry-After": str(retry_after), "X-RateLimit-Scope": "user"}
        elif status == 403:
            body, headers = {"message": "Missing Access", "code": 50001}, {}
        elif status == 404:
            body, headers = {"message": "Unknown Channel", "code": 10003}, {}
        else:
            body, headers = {"message": "Internal Server Error", "code": 0}, {}
        return _Failure(status, body, headers)

    # --- REST -----------------------------------------------------------------------------

    def _json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        # discord.py checks the content type exactly ("application/json", no charset).
        import json

        return web.Response(
            body=json.dumps(body).encode(),
            status=status,
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    def _check(self, request: web.Request, route: str) -> web.Response | None:
        with self._lock:
            self._requests.append((request.method, route, time.monotonic()))
            queued = self._failures.get(f"{request.method} {route}")
            failure = queued.pop(0) if queued else None
        if request.headers.get("Authorization") != f"Bot {self.token}":
            return self._json({"message": "401: Unauthorized", "code": 0}, 401)
        if failure is not None:
            return self._json(failure.body, failure.status, failure.headers)
        return None

    def _channel(self, request: web.Request) -> tuple[int, web.Response | None]:
        channel_id = int(request.match_info["channel"])
        with self._lock:
            failure = self._channel_failures.get(channel_id)
            known = channel_id in self.channels
        if failure is not None:
            return channel_id, self._json(failure.body, failure.status, failure.headers)
        if not known:
            return channel_id, self._json(self._failure(404, 0).body, 404)
        return channel_id, None

    async def _unknown(self, request: web.Request) -> web.Response:
        with self._lock:
            self._requests.append((request.method, request.path, time.monotonic()))
        return self._json({"message": "404: Not Found", "code": 0}, 404)

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return self._json({"url": self.gateway_url.rstrip("/")})

    async def _me(self, request: web.Request) -> web.Response:
        return self._check(request, "/users/@me") or self._json(_user(BOT_ID, "Andy", bot=True))

    async def _application(self, request: web.Request) -> web.Response:
        app = {
            "id": str(BOT_ID),
            "name": "Andy",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": _user(1, "Owner"),
            "verify_key": "0" * 64,
            "flags": 0,
        }
        return self._check(request, "/oauth2/applications/@me") or self._json(app)

    async def _create_message(self, request: web.Request) -> web.Response:
        channel_id, problem = self._channel(request)
        problem = self._check(request, f"/channels/{channel_id}/messages") or problem
        if problem is not None:
            return problem
        body = await request.json()
        content = str(body.get("content") or "")
        if len(content) > 2000:
            return self._json({"message": "Invalid Form Body", "code": 50035}, 400)
        message = self._message(channel_id, content, _user(BOT_ID, "Andy", bot=True))
        with self._lock:
            self.history[channel_id].append(message)
            self._sent.append(Sent(channel_id, content, int(message["id"]), time.monotonic()))
        return self._json(message)

    async def _list_messages(self, request: web.Request) -> web.Response:
        channel_id, problem = self._channel(request)
        problem = self._check(request, f"/channels/{channel_id}/messages") or problem
        if problem is not None:
            return problem
        after = int(request.query.get("after", "0"))
        limit = int(request.query.get("limit", "50"))
        with self._lock:
            later = [m for m in self.history[channel_id] if int(m["id"]) > after][:limit]
        return self._json(list(reversed(later)))  # Discord answers newest first

    async def _typing_route(self, request: web.Request) -> web.Response:
        channel_id, problem = self._channel(request)
        problem = self._check(request, f"/channels/{channel_id}/typing") or problem
        if problem is not None:
            return problem
        with self._lock:
            self._typing.append(channel_id)
        return web.Response(status=204)

    # --- gateway --------------------------------------------------------------------------

    def _dispatch_all(self, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            targets = []
            for session in self._sessions.values():
                payload = {"op": 0, "t": event, "s": len(session.events) + 1, "d": data}
                session.events.append(payload)
                if session.ws is not None and not session.ws.closed:
                    targets.append((session.ws, payload))
        for ws, payload in targets:
            self._call_soon(ws.send_json(payload))

    def _call_soon(self, coro: Any) -> None:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.add_done_callback(lambda f: f.exception())  # a closing socket is not a test failure

    async def _drop(self) -> None:
        for session in self._sessions.values():
            ws = session.ws
            if ws is not None and not ws.closed:
                transport = ws._req.transport if ws._req is not None else None
                if transport is not None:
                    transport.abort()
                session.ws = None

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        session_id: str | None = None
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = msg.json()
            op = frame.get("op")
            if op == 1:
                await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif op == 2:
                if frame["d"].get("token") != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                session_id = uuid.uuid4().hex
                with self._lock:
                    self.identifies += 1
                    session = self._sessions[session_id] = _Session(ws=ws)
                ready = {
                    "v": 10,
                    "user": _user(BOT_ID, "Andy", bot=True),
                    "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
                    "session_id": session_id,
                    "resume_gateway_url": self.gateway_url,
                    "application": {"id": str(BOT_ID), "flags": 0},
                }
                for event, data in (("READY", ready), ("GUILD_CREATE", self._guild())):
                    with self._lock:
                        payload = {"op": 0, "t": event, "s": len(session.events) + 1, "d": data}
                        session.events.append(payload)
                    await ws.send_json(payload)
            elif op == 6:
                wanted = frame["d"]
                with self._lock:
                    session = self._sessions.get(wanted.get("session_id") or "")
                    self.resumes += 1
                if session is None:
                    await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
                    continue
                session_id = wanted["session_id"]
                with self._lock:
                    session.ws = ws
                    missed = [e for e in session.events if e["s"] > int(wanted.get("seq") or 0)]
                    resumed = {"op": 0, "t": "RESUMED", "s": len(session.events) + 1, "d": {}}
                    session.events.append(resumed)
                for payload in [*missed, resumed]:
                    await ws.send_json(payload)
        if session_id is not None:
            with self._lock:
                session = self._sessions.get(session_id)
                if session is not None and session.ws is ws:
                    session.ws = None
        return ws
