"""Inbound: make an accepted envelope durable, then wake its group.

`ingest()` runs one write transaction: chat metadata upsert, the sender-allowlist drop check,
an idempotent insert keyed by ``message_id`` (a redelivery changes nothing) and the coalesced
kick flag. Only after it commits may a connector acknowledge the platform. The kick is
published afterwards; if publishing fails the message is still safe and the beat sweeper
wakes the group. `reject()` records a refused envelope in the audit log.

Does not validate envelopes (see `microclaw.envelope`) or decide whether the assistant answers
(the router does, when it drains the group).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine

from microclaw.core.senders import SenderAllowlist, should_drop_at_ingest
from microclaw.envelope import Envelope
from microclaw.errors import EnvelopeError
from microclaw.store import audit, groups, messages
from microclaw.store.db import now_ms, write_tx

logger = logging.getLogger(__name__)

IngestStatus = Literal["stored", "duplicate", "dropped", "unregistered"]


@dataclass(frozen=True)
class IngestResult:
    status: IngestStatus
    chat_jid: str
    seq: int | None = None
    kick: bool = False


def ingest(
    engine: Engine,
    envelope: Envelope,
    *,
    allowlist: Callable[[], SenderAllowlist] | None = None,
) -> IngestResult:
    """Store ``envelope`` durably and idempotently; says whether a kick must be published."""
    p = envelope.payload
    chat = p.chat_id
    received = now_ms()
    with write_tx(engine) as conn:
        messages.upsert_chat(
            conn, chat, envelope.timestamp_iso, name=p.chat_name, channel=envelope.source, is_group=p.is_group
        )
        group = groups.get_group(conn, chat)
        if group is None:
            # NanoClaw keeps metadata for every chat but messages only for registered groups.
            return IngestResult("unregistered", chat)
        if allowlist is not None and should_drop_at_ingest(
            chat,
            p.sender,
            is_from_me=p.is_from_me,
            is_bot_message=p.is_bot_message,
            registered=True,
            cfg=allowlist(),
        ):
            audit.record(
                conn,
                "message.dropped",
                chat_jid=chat,
                message_id=envelope.message_id,
                decision="drop",
                reason="sender not allowed (drop mode)",
            )
            return IngestResult("dropped", chat)
        seq = messages.insert_message(
            conn,
            received_at_ms=received,
            id=envelope.message_id,
            chat_jid=chat,
            sender=p.sender,
            sender_name=p.sender_name,
            content=p.text,
            timestamp=envelope.timestamp_iso,
            is_from_me=int(p.is_from_me),
            is_bot_message=int(p.is_bot_message),
            reply_to_message_id=p.reply_to_message_id,
            reply_to_message_content=p.reply_to_message_content,
            reply_to_sender_name=p.reply_to_sender_name,
        )
        if seq is None:
            return IngestResult("duplicate", chat)
        kick = groups.request_kick(conn, chat, received)
    return IngestResult("stored", chat, seq, kick)


def ingest_and_kick(
    engine: Engine,
    envelope: Envelope,
    kick: Callable[[str], object],
    *,
    allowlist: Callable[[], SenderAllowlist] | None = None,
) -> IngestResult:
    """`ingest()`, then publish the group's kick when one is due. Publishing errors are logged only."""
    result = ingest(engine, envelope, allowlist=allowlist)
    logger.debug(
        "ingested",
        extra={"message_id": envelope.message_id, "chat_jid": result.chat_jid, "status": result.status},
    )
    if result.kick:
        try:
            kick(result.chat_jid)
        except Exception:  # the message is durable; the sweeper re-kicks within seconds
            logger.warning(
                "kick publish failed; the sweeper will wake the group",
                extra={"chat_jid": result.chat_jid},
                exc_info=True,
            )
    return result


def reject(engine: Engine, error: EnvelopeError, *, source: str | None = None) -> None:
    """Audit a refused envelope (never its body)."""
    logger.warning("envelope rejected: %s", error, extra={"source": source, "field": error.field})
    audit.record_now(
        engine,
        "envelope.rejected",
        message_id=error.message_id,
        decision="deny",
        reason=str(error),
        field=error.field,
        source=source,
    )
