"""Small builders shared by tests (no fixtures, no I/O beyond what is asked)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, select

from microclaw.agent.loop import AgentRequest, AgentResult, run_agent
from microclaw.agent.providers.scripted import ScriptedProvider
from microclaw.config import OutboundSettings
from microclaw.connectors.fake import FakeConnector
from microclaw.connectors.mailbox import Mailbox
from microclaw.envelope import Envelope, make_envelope
from microclaw.pipeline.delivery import DeliveryDeps
from microclaw.pipeline.router import RouterConfig, RouterDeps
from microclaw.store import groups
from microclaw.store.db import read_tx, write_tx
from microclaw.store.models import OutboxEntry, Run

_counter = itertools.count(1)


def register(
    engine: Engine,
    jid: str,
    *,
    folder: str | None = None,
    is_main: bool = False,
    requires_trigger: bool | None = None,
    trigger: str = "@Andy",
) -> None:
    with write_tx(engine) as conn:
        groups.register_group(
            conn,
            jid=jid,
            name=jid,
            folder=folder or jid.replace(":", "_").replace("-", "_"),
            trigger=trigger,
            is_main=is_main,
            requires_trigger=requires_trigger,
        )


def envelope(
    chat: str,
    text: str,
    *,
    message_id: str | None = None,
    sender: str = "u1",
    is_from_me: bool = False,
    source: str = "fake",
) -> Envelope:
    n = next(_counter)
    return make_envelope(
        source=source,
        message_id=message_id or f"{chat}:{n}",
        chat_id=chat,
        text=text,
        sender=sender,
        sender_name=sender.upper(),
        is_from_me=is_from_me,
        ts_ms=1_700_000_000_000 + n,
    )


def scripted_agent(mode: str = "echo") -> Callable[[AgentRequest, Callable[[], None]], AgentResult]:
    provider = ScriptedProvider(mode=mode)
    return lambda request, on_step: run_agent(provider, request, assistant_name="Andy", on_step=on_step)


def router_deps(
    engine: Engine,
    tmp: Path,
    agent=None,
    *,
    published: list[str] | None = None,
    retry_delays_ms: tuple[int, ...] = (5_000, 10_000, 20_000, 40_000, 80_000),
    max_messages: int = 10,
) -> RouterDeps:
    sink = published if published is not None else []
    return RouterDeps(
        engine=engine,
        config=RouterConfig(
            assistant_name="Andy",
            default_trigger="@Andy",
            timezone="UTC",
            groups_dir=tmp / "groups",
            max_messages_per_prompt=max_messages,
            lease_ttl_ms=30_000,
            retry_delays_ms=retry_delays_ms,
        ),
        agent=agent or scripted_agent(),
        publish_deliver=sink.append,
        worker="test-worker",
    )


def fake_connector(tmp: Path, **kwargs: object) -> FakeConnector:
    return FakeConnector(Mailbox(tmp / "fake-outbox.db"), **kwargs)  # type: ignore[arg-type]


def delivery_deps(
    engine: Engine, connectors: list, runner: asyncio.Runner, **settings: float
) -> DeliveryDeps:
    return DeliveryDeps(
        engine=engine,
        connectors=connectors,
        settings=OutboundSettings(**{"max_attempts": 3, "retry_base_s": 0.01, **settings}),
        worker="test-outbound",
        runner=runner,
    )


def outbox_rows(engine: Engine) -> list:
    t = OutboxEntry.__table__
    with read_tx(engine) as conn:
        return list(conn.execute(select(t).order_by(t.c.id)))


def runs(engine: Engine) -> list:
    t = Run.__table__
    with read_tx(engine) as conn:
        return list(conn.execute(select(t).order_by(t.c.id)))
