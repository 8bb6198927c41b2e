"""The smoke check: one synthetic message through router -> agent -> outbox -> delivery.

It uses the real store, router and delivery code in-process (no Celery, no network) with the
scripted provider, on a dedicated local chat (``local:smoke``, registered once, never the
user's main group), and returns the reply text that reached the local mailbox.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from microclaw.agent.loop import AgentRequest, AgentResult, run_agent
from microclaw.agent.providers.scripted import ScriptedProvider
from microclaw.config import Settings
from microclaw.connectors.base import ConnectorSettings
from microclaw.connectors.local import LocalConnector
from microclaw.pipeline.delivery import DeliveryDeps, deliver_chat
from microclaw.pipeline.inbound import ingest
from microclaw.pipeline.router import RouterDeps, process_group
from microclaw.runtime.wiring import app_engine, bootstrap_database, router_config
from microclaw.store import groups
from microclaw.store.db import write_tx

SMOKE_CHAT = "local:smoke"
SMOKE_FOLDER = "local_smoke"


@dataclass(frozen=True)
class SmokeResult:
    sent: str
    reply: str | None
    delivered_id: int | None


def run_smoke(settings: Settings) -> SmokeResult:
    """Push one message through the pipeline; `SmokeResult.reply` is None if nothing arrived."""
    bootstrap_database(settings)
    engine = app_engine(settings)
    try:
        with write_tx(engine) as conn:
            if groups.get_group(conn, SMOKE_CHAT) is None:
                groups.register_group(
                    conn,
                    jid=SMOKE_CHAT,
                    name="Smoke test",
                    folder=SMOKE_FOLDER,
                    trigger=settings.trigger,
                    requires_trigger=False,
                )
        local = LocalConnector.from_settings(
            ConnectorSettings(
                name="local", options={}, data_dir=settings.data_dir, assistant_name=settings.assistant_name
            )
        )
        text = f"smoke test {uuid.uuid4().hex[:8]}"
        ingest(engine, local.build_envelope(text, chat_id=SMOKE_CHAT, sender_name="smoke"))
        provider = ScriptedProvider(mode="echo")

        def agent(request: AgentRequest, on_step: object) -> AgentResult:
            return run_agent(provider, request, assistant_name=settings.assistant_name)

        before = local.replies(0, chat_id=SMOKE_CHAT, limit=10_000)
        last_id = before[-1].id if before else 0
        process_group(
            RouterDeps(engine, router_config(settings), agent, lambda _c: None, "smoke"), SMOKE_CHAT
        )
        with asyncio.Runner() as runner:
            deliver_chat(DeliveryDeps(engine, [local], settings.outbound, "smoke", runner), SMOKE_CHAT)
        new = local.replies(last_id, chat_id=SMOKE_CHAT)
        reply = next((r for r in new if text in r.text), None)
        return SmokeResult(text, reply.text if reply else None, reply.id if reply else None)
    finally:
        engine.dispose()
