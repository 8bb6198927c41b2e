"""The scheduler tick: claim every due scheduled-task run exactly once.

`claim_due_tasks()` runs in one write transaction: for each active task whose ``next_run`` has
come, and that has no run already pending or running, it inserts a ``task_queue`` entry keyed
by (task, scheduled slot) — a second claim of the same slot is a no-op — and advances
``next_run`` with the schedule rules (``None`` for a once task, which `completion` marks
completed after its run). Returns the chats to kick.

One task never stops the others: each is handled in its own savepoint, and a task whose
schedule cannot be computed (an invalid value, a next run past the year 9999, an unreadable
stored time) or that raises anything else is paused, with a run-log row and a
``scheduler.paused`` audit row saying why; the tick goes on with the next task.

Limits (`ScheduleLimits`): the next run is never less than ``min_interval`` after the slot just
claimed (a stored or imported schedule that is too frequent runs at that pace, as under
NanoClaw's 60 s poll), and a group that used its ``daily_token_budget`` today gets no scheduled
runs: the slot is skipped (a recurring task moves to its next slot, a once task waits for
midnight UTC) with a run-log row and a ``scheduler.budget_skipped`` audit row.

Does not run tasks: the router does, before the group's pending messages.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine

from microclaw.scheduler.schedule import ScheduleLimits, next_run
from microclaw.store import audit, groups, task_queue, tasks, usage
from microclaw.store.db import now_ms, write_tx

logger = logging.getLogger(__name__)

BUDGET_SKIPPED = "skipped: the group's daily token budget (agent.daily_token_budget) is used up"
_TICK = timedelta(milliseconds=1)


def iso(moment: datetime) -> str:
    """NanoClaw's stored time form: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    """A stored time (ISO 8601, ``Z`` allowed, naive is UTC); ValueError for anything else."""
    if not isinstance(value, str):
        raise ValueError(f"stored time {value!r} is not text")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"stored time {value!r} is out of range") from exc


def claim_due_tasks(
    engine: Engine, *, timezone: str, now: datetime | None = None, limits: ScheduleLimits | None = None
) -> list[str]:
    """Claim due runs and advance their schedules; returns the chats whose groups to kick."""
    moment = now or datetime.now(tz=UTC)
    rules = limits or ScheduleLimits()
    stamp = iso(moment)
    chats: list[str] = []
    with write_tx(engine) as conn:
        due = tasks.due_tasks(conn, stamp)
        busy = task_queue.busy_task_ids(conn)
        spent: dict[str, int] = {}
        for task in due:
            if task.id in busy:
                # NanoClaw never queues a task id that is pending or running; this slot stays due
                # and the run that finishes moves the schedule past the slots it missed.
                continue
            savepoint = conn.begin_nested()
            try:
                claimed = _claim_one(conn, task, moment, timezone, rules, spent)
                savepoint.commit()
            except Exception as exc:
                savepoint.rollback()
                if isinstance(exc, ValueError):
                    reason = f"schedule invalid: {exc}"
                else:
                    logger.exception("task %s broke the tick", task.id, extra={"task_id": task.id})
                    reason = f"task could not be scheduled ({type(exc).__name__}: {exc})"
                _pause(conn, task, stamp, reason)
                continue
            if claimed:
                logger.info("task %s due", task.id, extra={"chat_jid": task.chat_jid, "task_id": task.id})
                groups.get_state(conn, task.chat_jid)
                if task.chat_jid not in chats:
                    chats.append(task.chat_jid)
    return chats


def _claim_one(
    conn: Connection,
    task: tasks.Task,
    moment: datetime,
    timezone: str,
    rules: ScheduleLimits,
    spent: dict[str, int],
) -> bool:
    """Claim one due task's slot (or skip it over budget); raises when its schedule is bad."""
    slot = task.next_run
    assert slot is not None  # due_tasks() returns only tasks with a next run
    scheduled = parse_iso(slot)
    # The next slot is at least min_interval after this one, whatever the stored schedule says.
    floor = max(moment, scheduled + rules.min_interval - _TICK) if rules.min_interval else moment
    following = next_run(task.schedule_type, task.schedule_value, scheduled, floor, timezone)
    if rules.daily_token_budget:
        if task.group_folder not in spent:
            spent[task.group_folder] = usage.tokens_today(conn, task.group_folder, usage.utc_day(moment))
        if spent[task.group_folder] >= rules.daily_token_budget:
            _skip_over_budget(conn, task, moment, following)
            return False
    claimed = task_queue.claim(
        conn, task_id=task.id, chat_jid=task.chat_jid, scheduled_for=slot, now_ms=now_ms()
    )
    tasks.update_task(conn, task.id, next_run=iso(following) if following else None)
    return claimed


def _skip_over_budget(
    conn: Connection, task: tasks.Task, moment: datetime, following: datetime | None
) -> None:
    """Skip a slot of a group over its daily budget: recurring tasks move on, once tasks wait."""
    if following is None:  # a once task: due again when the budget resets
        tomorrow = moment.astimezone(UTC).date() + timedelta(days=1)
        following = datetime.combine(tomorrow, datetime.min.time(), UTC)
    tasks.update_task(conn, task.id, next_run=iso(following))
    tasks.log_task_run(
        conn, task_id=task.id, run_at=iso(moment), duration_ms=0, status="error", error=BUDGET_SKIPPED
    )
    audit.record(
        conn,
        "scheduler.budget_skipped",
        chat_jid=task.chat_jid,
        decision="skip",
        task_id=task.id,
        group=task.group_folder,
    )
    logger.warning("task %s skipped: daily token budget used up", task.id, extra={"chat_jid": task.chat_jid})


def _pause(conn: Connection, task: tasks.Task, stamp: str, reason: str) -> None:
    tasks.update_task(conn, task.id, status="paused")
    tasks.log_task_run(conn, task_id=task.id, run_at=stamp, duration_ms=0, status="error", error=reason)
    audit.record(
        conn, "scheduler.paused", chat_jid=task.chat_jid, decision="deny", task_id=task.id, error=reason
    )
    logger.warning("task %s paused: %s", task.id, reason, extra={"chat_jid": task.chat_jid})
