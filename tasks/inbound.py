"""``microclaw.ingest``: validate a raw envelope published by an external producer, store it,
and wake its group. A malformed envelope is audited and dropped; the worker carries on."""

from __future__ import annotations

import logging
from typing import Any

from microclaw.envelope import parse_envelope
from microclaw.errors import EnvelopeError
from microclaw.pipeline.inbound import ingest_and_kick, reject
from microclaw.runtime import queues
from microclaw.runtime.wiring import sender_allowlist_loader
from workers.app import app, publish
from workers.context import context

logger = logging.getLogger(__name__)


@app.task(name=queues.INGEST, ignore_result=True)
def ingest(raw: Any) -> str:
    ctx = context()
    try:
        envelope = parse_envelope(raw, max_text_bytes=ctx.settings.router.max_text_bytes)
    except EnvelopeError as exc:
        reject(ctx.engine, exc, source="celery")
        return "rejected"
    result = ingest_and_kick(
        ctx.engine, envelope, publish.kick, allowlist=sender_allowlist_loader(ctx.settings)
    )
    return result.status
