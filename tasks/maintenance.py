"""``microclaw.sweep`` re-publishes lost wake-ups and deliveries; ``microclaw.cleanup`` does the
broker's housekeeping (dead consumers' messages back, expired reply/pidbox queues deleted) and
deletes stale heartbeats."""

from __future__ import annotations

import logging

from microclaw.broker.transport import housekeep
from microclaw.pipeline.sweeper import sweep as find_stranded
from microclaw.runtime import queues
from microclaw.store import status
from microclaw.store.db import now_ms, write_tx
from workers.app import app, publish
from workers.context import context

logger = logging.getLogger(__name__)
HEARTBEAT_RETENTION_MS = 24 * 3600 * 1000


@app.task(name=queues.SWEEP, ignore_result=True)
def sweep() -> dict[str, int]:
    ctx = context()
    found = find_stranded(ctx.engine, stale_after_ms=int(ctx.settings.beat.stale_after_s * 1000))
    for chat in found.kick:
        logger.info("sweeper re-kicks group", extra={"chat_jid": chat})
        publish.kick(chat)
    for chat in found.deliver:
        publish.deliver(chat)
    return {"kicked": len(found.kick), "delivered": len(found.deliver)}


@app.task(name=queues.CLEANUP, ignore_result=True)
def cleanup() -> dict[str, int]:
    ctx = context()
    done = housekeep(ctx.settings.broker.url)
    with write_tx(ctx.engine) as conn:
        status.prune_heartbeats(conn, seen_before_ms=now_ms() - HEARTBEAT_RETENTION_MS)
    logger.info("broker housekeeping: %s", done)
    return done
