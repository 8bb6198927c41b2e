"""Fake Anthropic and OpenAI APIs on 127.0.0.1 that speak the real wire formats.

Each server runs aiohttp in its own thread and answers from a script of neutral `Step`s (text
and/or tool calls), or from a ``responder`` callable for dynamic runs (benchmarks, e2e). Errors
are scripted with `Fail` (status, the vendor's error body, optional ``retry-after``). Every
request body is recorded in ``requests`` so tests can assert what the SDK sent (tool results,
``is_error`` flags, system prompt, history).

Anthropic: ``POST /v1/messages`` -> a ``message`` with ``text`` / ``tool_use`` blocks,
``stop_reason`` and ``usage``; errors ``{"type": "error", "error": {"type", "message"}}``.
OpenAI: ``POST /v1/chat/completions`` -> a ``chat.completion`` whose ``message`` carries
``tool_calls`` with JSON-string ``arguments``; errors ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Call:
    name: str
    arguments: dict[str, Any] | str  # a str is sent verbatim (OpenAI: malformed JSON on purpose)
    id: str | None = None


@dataclass
class Step:
    text: str | None = None
    calls: list[Call] = field(default_factory=list)
    input_tokens: int = 10
    output_tokens: int = 5


@dataclass
class Fail:
    status: int
    message: str = "failure"
    retry_after: str | None = None


Responder = Callable[[dict[str, Any]], "Step | Fail"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _FakeServer:
    path = ""

    def __init__(self) -> None:
        self.script: deque[Step | Fail] = deque()
        self.responder: Responder | None = None
        self.requests: list[dict[str, Any]] = []
        self.request_times: list[float] = []
        self.headers: list[dict[str, str]] = []
        self.port = _free_port()
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True, name=type(self).__name__)

    def start(self) -> _FakeServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, *items: Step | Fail) -> None:
        self.script.extend(items)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.request_times.append(time.monotonic())
        self.headers.append(dict(request.headers))
        if self.responder is not None:
            item = self.responder(body)
        elif self.script:
            item = self.script.popleft()
        else:
            item = Fail(500, "fake server: script exhausted")
        if isinstance(item, Fail):
            headers = {"retry-after": item.retry_after} if item.retry_after is not None else {}
            return web.json_response(self.error_body(item), status=item.status, headers=headers)
        return web.json_response(self.reply_body(body, item))

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    def error_body(self, fail: Fail) -> dict[str, Any]:
        raise NotImplementedError

    def reply_body(self, request: dict[str, Any], step: Step) -> dict[str, Any]:
        raise NotImplementedError


class FakeAnthropic(_FakeServer):
    """``POST /v1/messages``; point the SDK's ``base_url`` at `base_url`."""

    path = "/v1/messages"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_body(self, fail: Fail) -> dict[str, Any]:
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(fail.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": fail.message}}

    def reply_body(self, request: dict[str, Any], step: Step) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if step.text is not None:
            content.append({"type": "text", "text": step.text})
        for call in step.calls:
            arguments = call.arguments if isinstance(call.arguments, dict) else json.loads(call.arguments)
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id or self.next_id("toolu"),
                    "name": call.name,
                    "input": arguments,
                }
            )
        return {
            "id": self.next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "claude-test"),
            "content": content,
            "stop_reason": "tool_use" if step.calls else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": step.input_tokens, "output_tokens": step.output_tokens},
        }


class FakeOpenAI(_FakeServer):
    """``POST /v1/chat/completions``; point the SDK's ``base_url`` at `base_url` (ends in /v1)."""

    path = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def error_body(self, fail: Fail) -> dict[str, Any]:
        kind = {429: "rate_limit_exceeded", 401: "invalid_api_key", 400: "invalid_request_error"}
        return {
            "error": {
                "message": fail.message,
                "type": kind.get(fail.status, "server_error"),
                "param": None,
                "code": kind.get(fail.status),
            }
        }

    def reply_body(self, request: dict[str, Any], step: Step) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": step.text}
        if step.calls:
            message["tool_calls"] = [
                {
                    "id": call.id or self.next_id("call"),
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": call.arguments
                        if isinstance(call.arguments, str)
                        else json.dumps(call.arguments),
                    },
                }
                for call in step.calls
            ]
        return {
            "id": self.next_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "gpt-test"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if step.calls else "stop"}
            ],
            "usage": {
                "prompt_tokens": step.input_tokens,
                "completion_tokens": step.output_tokens,
                "total_tokens": step.input_tokens + step.output_tokens,
            },
        }


class FolderSandbox:
    """A sandbox double for loop tests: files live in a temp folder per group; ``exec`` answers
    from ``commands`` (argv tuple or ``sh -c`` string -> (exit, stdout)). Never runs anything."""

    def __init__(self, root: Any) -> None:
        from pathlib import Path

        self.root = Path(root)
        self.commands: dict[Any, tuple[int, str]] = {}
        self.calls: list[tuple[str, str, Any]] = []

    def _path(self, group: str, path: str) -> Any:
        base = (self.root / group).resolve()
        target = (base / path).resolve()
        if not str(target).startswith(str(base)):
            from microclaw.errors import PolicyDenied

            raise PolicyDenied("sandbox", "path outside the workspace", group=group)
        return target

    def exec(self, group, argv, *, timeout=None, tool=None, is_main=None):  # type: ignore[no-untyped-def]
        from microclaw.sandbox.base import ExecResult

        self.calls.append(("exec", group, list(argv)))
        key = argv[2] if list(argv[:2]) == ["sh", "-c"] else tuple(argv)
        code, out = self.commands.get(key, (127, ""))
        err = b"" if key in self.commands else b"sh: command not found\n"
        return ExecResult(code, out.encode(), err, False, 1, False, len(out), len(err))

    def read_file(self, group, path, *, max_bytes=None, is_main=None):  # type: ignore[no-untyped-def]
        from microclaw.errors import PermanentSandboxError
        from microclaw.sandbox.service import FileContent

        self.calls.append(("read_file", group, path))
        target = self._path(group, path)
        if not target.is_file():
            raise PermanentSandboxError(f"no such file: {path}", group=group)
        data = target.read_bytes()
        return FileContent(
            data[: max_bytes or len(data)], bool(max_bytes and len(data) > max_bytes), len(data)
        )

    def write_file(self, group, path, data, *, is_main=None):  # type: ignore[no-untyped-def]
        self.calls.append(("write_file", group, path))
        target = self._path(group, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return len(data)

    def list_files(self, group, path=".", *, is_main=None):  # type: ignore[no-untyped-def]
        from microclaw.sandbox.service import FileEntry

        self.calls.append(("list_files", group, path))
        target = self._path(group, path)
        return [
            FileEntry(p.name, "dir" if p.is_dir() else "file", p.stat().st_size, int(p.stat().st_mtime))
            for p in sorted(target.iterdir())
        ]
