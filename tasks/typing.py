"""``microclaw.typing``: show "typing…" in a chat while its agent runs (best effort).

Runs on the outbound queue, next to the connectors' send clients. A connector whose platform
has no indicator keeps `BaseConnector.send_typing`'s default and this is a no-op; a platform
error is logged and dropped (an indicator that arrives late is worthless, so nothing is
retried). Publishers should set a short ``expires`` for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Literal

from microclaw.connectors.base import BaseConnector
from microclaw.errors import ConnectorError
from microclaw.pipeline.delivery import connector_for
from microclaw.runtime import queues
from workers.app import app
from workers.context import context

logger = logging.getLogger(__name__)

TypingOutcome = Literal["sent", "unsupported", "failed"]


def show_typing(connectors: Sequence[BaseConnector], runner: asyncio.Runner, chat_jid: str) -> TypingOutcome:
    """Ask the connector that owns ``chat_jid`` to show the typing indicator, if it can."""
    connector = connector_for(connectors, chat_jid)
    if connector is None:
        return "unsupported"
    try:
        shown = runner.run(connector.send_typing(chat_jid))
    except ConnectorError as exc:
        logger.info("typing indicator not shown: %s", exc, extra={"chat_jid": chat_jid})
        return "failed"
    return "sent" if shown else "unsupported"


@app.task(name=queues.TYPING, ignore_result=True)
def typing(chat_jid: str) -> str:
    ctx = context()
    return show_typing(ctx.connectors, ctx.runner, chat_jid)
