"""``microclaw.tick``: claim due scheduled-task runs and wake their groups."""

from __future__ import annotations

from microclaw.runtime import queues
from microclaw.runtime.wiring import schedule_limits
from microclaw.scheduler.tick import claim_due_tasks
from workers.app import app, publish
from workers.context import context


@app.task(name=queues.TICK, ignore_result=True)
def tick() -> int:
    ctx = context()
    chats = claim_due_tasks(ctx.engine, timezone=ctx.settings.timezone, limits=schedule_limits(ctx.settings))
    for chat in chats:
        publish.kick(chat)
    return len(chats)
