"""Delivery: send one chat's outbox rows in order, each at most once.

`deliver_chat()` is what a ``deliver(chat)`` task runs. It takes the chat's outbox lease (so
one process sends to a chat at a time and replies keep their order), then for each unfinished
row, oldest first: claims it (``sending``, attempt counted) in one transaction, sends it through
the connector that owns the address (split to the platform's size limit), and marks it
``delivered``. Transient errors put the row back with exponential backoff (or the platform's
``retry_after``) and stop the chat until then; permanent errors and exhausted attempts mark it
``failed`` with an audit row and move on. A row found ``sending`` at lease acquisition was
interrupted by a crash: re-sent when the connector deduplicates by key, otherwise marked
``uncertain`` and never sent again (a reply is never duplicated).

Does not decide what to say; it only moves outbox rows to platforms.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, Engine

from microclaw.config import OutboundSettings
from microclaw.connectors.base import BaseConnector
from microclaw.errors import ConnectorError, LeaseLost, TransientConnectorError
from microclaw.pipeline import leases
from microclaw.store import audit, outbox
from microclaw.store.db import now_ms, write_tx
from microclaw.store.outbox import OutboxRow

logger = logging.getLogger(__name__)

DeliverOutcome = Literal["busy", "drained", "waiting", "lost"]


@dataclass
class DeliveryDeps:
    engine: Engine
    connectors: Sequence[BaseConnector]
    settings: OutboundSettings
    worker: str
    runner: asyncio.Runner
    lease_ttl_ms: int = 60_000


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters, preferring line breaks."""
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit)
        if cut <= 0:
            cut = limit
        chunks.append(rest[:cut])
        rest = rest[cut:].lstrip("\n") if cut < limit else rest[cut:]
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def connector_for(connectors: Sequence[BaseConnector], chat_id: str) -> BaseConnector | None:
    return next((c for c in connectors if c.owns(chat_id)), None)


def _backoff_ms(settings: OutboundSettings, attempts: int, retry_after: float | None) -> int:
    delay = settings.retry_base_s * (2 ** max(0, attempts - 1))
    if retry_after is not None:
        delay = max(delay, retry_after) if attempts > 1 else retry_after
    return int(min(delay, settings.max_retry_delay_s) * 1000)


@dataclass(frozen=True)
class _Claim:
    """A reply claimed for sending (``sending``, attempt counted)."""

    row: OutboxRow
    attempts: int


def deliver_chat(deps: DeliveryDeps, chat_jid: str) -> DeliverOutcome:
    """Send the chat's pending replies in order. Safe to call any number of times."""
    name = leases.outbox_lease(chat_jid)
    connector = connector_for(deps.connectors, chat_jid)
    with write_tx(deps.engine) as conn:
        token = leases.acquire(conn, name, deps.worker, ttl_ms=deps.lease_ttl_ms, now_ms=now_ms())
        if token is None:
            return "busy"
        step = _claim_next(conn, chat_jid, connector, name, token)
    try:
        while isinstance(step, _Claim):
            assert connector is not None  # _claim_next fails the chat's rows when none owns it
            row, attempts = step.row, step.attempts
            try:
                platform_id = _send(deps, connector, row.chat_jid, row.text, row.idempotency_key)
            except ConnectorError as exc:
                with write_tx(deps.engine) as conn:
                    leases.fence(conn, name, token, ttl_ms=deps.lease_ttl_ms, now_ms=now_ms())
                    if _record_failure(conn, deps, chat_jid, row.id, attempts, exc):
                        leases.release(conn, name, token)
                        return "waiting"
                    step = _claim_next(conn, chat_jid, connector, name, token)
                continue
            with write_tx(deps.engine) as conn:
                leases.fence(conn, name, token, ttl_ms=deps.lease_ttl_ms, now_ms=now_ms())
                outbox.mark(
                    conn,
                    row.id,
                    "delivered",
                    delivered_at_ms=now_ms(),
                    platform_message_id=platform_id,
                    last_error=None,
                )
                step = _claim_next(conn, chat_jid, connector, name, token)
            logger.info("reply delivered", extra={"chat_jid": chat_jid, "outbox_id": row.id})
        return step
    except LeaseLost:
        return "lost"


def _claim_next(
    conn: Connection, chat_jid: str, connector: BaseConnector | None, lease: str, token: int
) -> _Claim | DeliverOutcome:
    """Claim the chat's next reply; or release the lease (same transaction) and say why not."""
    while True:
        row = outbox.head(conn, chat_jid)
        if row is None:
            leases.release(conn, lease, token)
            return "drained"
        if row.status == "sending":  # a crash interrupted this send
            if connector is None or not connector.idempotent_send:
                outbox.mark(conn, row.id, "uncertain", last_error="interrupted mid-send; not re-sent")
                audit.record(conn, "outbox.uncertain", chat_jid=chat_jid, decision="drop", outbox_id=row.id)
                continue
            logger.warning("re-sending interrupted reply %s (platform deduplicates)", row.id)
        elif row.next_attempt_at_ms > now_ms():
            leases.release(conn, lease, token)
            return "waiting"
        if connector is None:
            outbox.mark(conn, row.id, "failed", last_error=f"no enabled connector owns {chat_jid!r}")
            audit.record(
                conn,
                "outbox.failed",
                chat_jid=chat_jid,
                decision="error",
                outbox_id=row.id,
                error="no connector for address",
            )
            continue
        outbox.mark(conn, row.id, "sending", attempts=row.attempts + 1, claimed_at_ms=now_ms())
        return _Claim(row, row.attempts + 1)


def _send(deps: DeliveryDeps, connector: BaseConnector, chat_id: str, text: str, key: str) -> str:
    ids = []
    chunks = split_text(text, connector.max_text_len)
    for index, chunk in enumerate(chunks):
        chunk_key = key if len(chunks) == 1 else f"{key}#{index}"
        ids.append(deps.runner.run(connector.send(chat_id, chunk, idempotency_key=chunk_key)))
    return ",".join(ids)


def _record_failure(
    conn: Connection, deps: DeliveryDeps, chat_jid: str, row_id: int, attempts: int, exc: ConnectorError
) -> bool:
    """Record a failed send; True when it will be retried later (the chat waits until then)."""
    retry = isinstance(exc, TransientConnectorError) and attempts < deps.settings.max_attempts
    if retry:
        delay = _backoff_ms(deps.settings, attempts, exc.retry_after)
        outbox.mark(conn, row_id, "pending", next_attempt_at_ms=now_ms() + delay, last_error=str(exc))
        logger.warning(
            "send failed (attempt %d), retrying in %d ms: %s",
            attempts,
            delay,
            exc,
            extra={"chat_jid": chat_jid},
        )
    else:
        outbox.mark(conn, row_id, "failed", last_error=str(exc))
        audit.record(
            conn,
            "outbox.failed",
            chat_jid=chat_jid,
            decision="error",
            outbox_id=row_id,
            attempts=attempts,
            error=str(exc),
        )
        logger.error("reply dropped after %d attempts: %s", attempts, exc, extra={"chat_jid": chat_jid})
    return retry
