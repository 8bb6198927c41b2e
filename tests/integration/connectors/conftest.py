"""Fixtures for connector tests: fake platform servers on loopback, a host that supervises a
connector and stores what it delivers in a real SQLite app database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from microclaw.config import Settings
from microclaw.connectors.base import BaseConnector
from microclaw.envelope import Envelope
from microclaw.pipeline.inbound import ingest
from microclaw.runtime.host import Host
from microclaw.store.db import read_tx
from microclaw.store.models import Message
from tests.integration.connectors.fake_discord import FakeDiscord
from tests.integration.connectors.fake_telegram import FakeTelegram


@pytest.fixture
def fake_telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_discord(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDiscord]:
    fake = FakeDiscord().start()
    fake.patch(monkeypatch)
    yield fake
    fake.stop()


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


def stored(engine: Engine, chat_jid: str) -> list[Any]:
    """Rows of the ``messages`` table for one chat, in arrival order."""
    t = Message.__table__
    with read_tx(engine) as conn:
        return list(conn.execute(select(t).where(t.c.chat_jid == chat_jid).order_by(t.c.seq)))


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` inside the event loop until it is truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


class FlakyHost(Host):
    """The real host, whose store fails for the first ``failures`` envelopes (as a crash before
    the commit would): the connector must not acknowledge those, and must see them again."""

    def __init__(self, settings: Settings, engine: Engine, *, failures: int = 0) -> None:
        super().__init__(settings, engine, [], publish_kick=self.kicks_append)
        self.kicks: list[str] = []
        self.failures = failures
        self.seen: list[Envelope] = []

    def kicks_append(self, chat_jid: str) -> None:
        self.kicks.append(chat_jid)

    def _ingest(self, envelope: Envelope) -> None:
        self.seen.append(envelope)
        if self.failures > 0:
            self.failures -= 1
            raise OSError("simulated crash before the message was durable")
        super()._ingest(envelope)


@pytest.fixture
def make_host(settings: Settings, engine: Engine) -> Callable[..., FlakyHost]:
    def build(failures: int = 0) -> FlakyHost:
        return FlakyHost(settings, engine, failures=failures)

    return build


async def supervise(host: Host, connector: BaseConnector) -> asyncio.Task[None]:
    """Run ``connector`` under the host's supervisor (restart with backoff) as a task."""
    return asyncio.create_task(host._supervise(connector))


async def stop(host: Host, task: asyncio.Task[None], connector: BaseConnector) -> None:
    host.stop()
    await cancel(task)
    await connector.close()


async def cancel(task: asyncio.Task[None]) -> None:
    """Cancel a connector's listen task, as shutdown does, and wait for it to end."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class CrashAfterStore:
    """The crash-before-acknowledge scenario: `store` stores an envelope for real; `store_then_die`
    stores it and then kills the listener before it can acknowledge, by raising (``crash`` =
    "raises") or by hanging until cancelled as at shutdown ("cancelled"). ``handed`` lists the
    message ids of every hand-over."""

    def __init__(self, engine: Engine, crash: str) -> None:
        self.engine = engine
        self.crash = crash
        self.handed: list[str] = []

    async def store(self, envelope: Envelope) -> None:
        self.handed.append(envelope.message_id)
        await asyncio.to_thread(ingest, self.engine, envelope)

    async def store_then_die(self, envelope: Envelope) -> None:
        await self.store(envelope)
        if self.crash == "raises":
            raise RuntimeError("killed between the store and the acknowledgement")
        await asyncio.Event().wait()  # hangs until cancelled

    async def died(self, task: asyncio.Task[None]) -> None:
        """Wait for the listener of `store_then_die` to die the chosen way."""
        if self.crash == "cancelled":
            await cancel(task)
        else:
            with pytest.raises(RuntimeError):
                await task
