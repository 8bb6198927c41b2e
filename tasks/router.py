"""``microclaw.kick``: drain one group's pending work under its lease (see `microclaw.pipeline.router`).

At most ``router.concurrency`` groups run at once per worker process: a kick that finds every
run slot taken is published again shortly (kicks are idempotent), leaving the pool's other
threads to deliveries and upkeep.
"""

from __future__ import annotations

from typing import Any

from microclaw.errors import TransientStoreError
from microclaw.pipeline.router import process_group
from microclaw.runtime import queues
from workers.app import app
from workers.context import context

# Seconds before a kick that found the run cap full is tried again.
RUN_CAP_RETRY_S = 0.5


@app.task(name=queues.KICK, ignore_result=True, bind=True, max_retries=5)
def kick(self: Any, chat_jid: str) -> str:
    ctx = context()
    if not ctx.run_slots.acquire(blocking=False):
        raise self.retry(countdown=RUN_CAP_RETRY_S, max_retries=None)
    try:
        return process_group(ctx.router_deps, chat_jid)
    except TransientStoreError as exc:  # database busy for 30 s: try again shortly
        raise self.retry(exc=exc, countdown=1) from exc
    finally:
        ctx.run_slots.release()
