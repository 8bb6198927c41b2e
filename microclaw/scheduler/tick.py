"""The scheduler tick: claim every due scheduled-task run exactly once.

`claim_due_tasks()` runs in one write transaction: for each active task whose ``next_run`` has
come, and that has no run already pending or running, it inserts a ``task_queue`` entry keyed
by (task, scheduled slot) — a second claim of the same slot is a no-op — and advances
``next_run`` with the schedule rules (``None`` for a once task, which `completion` marks
completed after its run). A task whose schedule can no longer be computed is paused with a
run-log row saying why. Returns the chats to kick.

Does not run tasks: the router does, before the group's pending messages.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import Engine

from microclaw.scheduler.schedule import next_run
from microclaw.store import audit, groups, task_queue, tasks
from microclaw.store.db import now_ms, write_tx

logger = logging.getLogger(__name__)


def iso(moment: datetime) -> str:
    """NanoClaw's stored time form: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def claim_due_tasks(engine: Engine, *, timezone: str, now: datetime | None = None) -> list[str]:
    """Claim due runs and advance their schedules; returns the chats whose groups to kick."""
    moment = now or datetime.now(tz=UTC)
    stamp = iso(moment)
    chats: list[str] = []
    with write_tx(engine) as conn:
        due = tasks.due_tasks(conn, stamp)
        busy = task_queue.busy_task_ids(conn)
        for task in due:
            if task.id in busy:
                # NanoClaw never queues a task id that is pending or running; this slot stays due
                # and the run that finishes moves the schedule past the slots it missed.
                continue
            slot = task.next_run
            assert slot is not None  # due_tasks() returns only tasks with a next run
            try:
                following = next_run(
                    task.schedule_type, task.schedule_value, parse_iso(slot), moment, timezone
                )
            except ValueError as exc:
                tasks.update_task(conn, task.id, status="paused")
                tasks.log_task_run(
                    conn,
                    task_id=task.id,
                    run_at=stamp,
                    duration_ms=0,
                    status="error",
                    error=f"schedule invalid: {exc}",
                )
                audit.record(
                    conn,
                    "scheduler.paused",
                    chat_jid=task.chat_jid,
                    decision="deny",
                    task_id=task.id,
                    error=str(exc),
                )
                continue
            claimed = task_queue.claim(
                conn, task_id=task.id, chat_jid=task.chat_jid, scheduled_for=slot, now_ms=now_ms()
            )
            tasks.update_task(conn, task.id, next_run=iso(following) if following else None)
            if claimed:
                logger.info("task %s due", task.id, extra={"chat_jid": task.chat_jid, "task_id": task.id})
                groups.get_state(conn, task.chat_jid)
                if task.chat_jid not in chats:
                    chats.append(task.chat_jid)
    return chats
