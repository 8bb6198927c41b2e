"""The shape every fake platform server in these tests shares: an aiohttp app on 127.0.0.1,
served by its own event loop in a daemon thread so tests can drive it synchronously."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any, Self

from aiohttp import web


class LoopbackServer:
    """Subclasses add their routes in `_add_routes` and may close live connections (websockets)
    in `_close_connections`. ``port`` is kept across `_shutdown`/`_serve`, so a restart listens
    on the same port."""

    thread_name = "fake-server"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        self._call(self._serve())
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._loop.close()
        self._loop = None

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def _close_connections(self) -> None:
        """Close what the runner's cleanup would wait on (none by default)."""

    async def _serve(self) -> None:
        app = web.Application()
        self._add_routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        await self._close_connections()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
