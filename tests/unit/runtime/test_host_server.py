"""The host's HTTP server: idle, it wakes about once a second (uvicorn's own loop: ten times),
it still answers, and asking it to stop stops it at once."""

from __future__ import annotations

import asyncio

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from microclaw.runtime.host import QuietServer
from tests.conftest import free_port


class CountingServer(QuietServer):
    ticks = 0

    async def on_tick(self, counter: int) -> bool:
        self.ticks += 1
        return await super().on_tick(counter)


def test_an_idle_server_ticks_about_once_a_second_and_stops_when_asked() -> None:
    async def scenario() -> tuple[int, int, bytes | None, bool]:
        app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
        server = CountingServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/")
        start = server.ticks
        await asyncio.sleep(2.5)  # uvicorn's own loop ticks 25 times meanwhile
        idle_ticks = server.ticks - start
        server.tick_s = 60.0  # from now on only a wake-up can end the wait before a minute
        await asyncio.sleep(1.5)
        server.should_exit = True  # what Host.stop and uvicorn's signal handler do
        done, _ = await asyncio.wait({task}, timeout=30)
        date = dict(response.headers.raw).get(b"date")
        return response.status_code, idle_ticks, date, task in done

    status, idle_ticks, date, stopped = asyncio.run(scenario())
    assert status == 200 and date  # the Date header is still refreshed by the tick
    assert 1 <= idle_ticks <= 4
    assert stopped  # woken at once, not at the next tick
