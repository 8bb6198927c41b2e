"""A fake OpenAI audio API on 127.0.0.1 speaking the real endpoints, for the `openai` speech
providers driven through the real SDK.

``POST /v1/audio/transcriptions``: a multipart form (``file``, ``model``, ``response_format``,
optional ``language``) -> ``{"text": ...}`` from ``transcripts`` (a callable given the WAV).
``POST /v1/audio/speech``: JSON ``{model, voice, input, response_format}`` -> the audio bytes
(``audio/wav``) from ``speech`` (a callable given the text). ``fail_with`` scripts an HTTP
error for the next requests ({"error": {...}} bodies, as OpenAI sends). Every request is
recorded in ``requests``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import BodyPartReader, web

from tests.integration.connectors.loopback_server import LoopbackServer


class FakeOpenAIAudio(LoopbackServer):
    thread_name = "fake-openai-audio"

    def __init__(self, transcripts: Callable[[bytes], str], speech: Callable[[str], bytes]) -> None:
        super().__init__()
        self.transcripts = transcripts
        self.speech = speech
        self.requests: list[dict[str, Any]] = []
        self.fail_with: list[int] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_post("/v1/audio/speech", self._speak)

    def _failure(self) -> web.Response | None:
        if not self.fail_with:
            return None
        status = self.fail_with.pop(0)
        return web.json_response(
            {"error": {"message": "scripted failure", "type": "server_error", "code": None}}, status=status
        )

    async def _transcribe(self, request: web.Request) -> web.Response:
        form: dict[str, Any] = {
            "content_type": request.content_type,
            "auth": request.headers.get("Authorization"),
        }
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, BodyPartReader)
            if part.name == "file":
                form["filename"] = part.filename
                form["file"] = bytes(await part.read())
            else:
                form[str(part.name)] = (await part.read()).decode()
        self.requests.append({"path": request.path, **form})
        failure = self._failure()
        if failure is not None:
            return failure
        return web.json_response({"text": self.transcripts(form.get("file", b""))})

    async def _speak(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"path": request.path, "auth": request.headers.get("Authorization"), **body})
        failure = self._failure()
        if failure is not None:
            return failure
        return web.Response(body=self.speech(body["input"]), content_type="audio/wav")
