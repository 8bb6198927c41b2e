"""What happens to a scheduled task after its run (contract §4, NanoClaw's post-run rules).

`finish_task_run()` runs in the transaction that finishes the run, after the router has fenced
the lease and queued any reply: the run is marked ``done`` or ``failed``, its queue entry
``done``, a ``task_run_logs`` row is appended (``success`` / ``error``), and the task gets
``last_run`` and the truncated ``last_result``. An active ``once`` task (no ``next_run`` left)
becomes ``completed``; a recurring task whose ``next_run`` came due while this run was queued or
running moves past the slots it missed, as NanoClaw computes the next run only after a run.
`settle_interrupted()` does the same for a task run whose worker died (found ``running`` by the
next lease holder): it is logged as an error and the run marked ``abandoned``. Task runs are
never retried.

Does not choose or run tasks (the router does), claim due runs (`microclaw.scheduler.tick`) or
roll back message cursors. All functions run inside a write transaction the caller opened.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from microclaw.scheduler.schedule import next_run, truncate_result
from microclaw.scheduler.tick import iso, parse_iso
from microclaw.store import runs, task_queue, tasks

INTERRUPTED = "interrupted: the worker stopped during the run"


def finish_task_run(
    conn: Connection,
    *,
    run_id: int,
    entry_id: int | None,
    task_id: str | None,
    text: str | None,
    error: str | None,
    duration_ms: int,
    timezone: str,
    now: datetime | None = None,
) -> None:
    """Record the outcome of a task run; ``task_id`` is None when the task was gone at its start.

    ``entry_id`` is the run's ``task_queue`` entry (None only for a run that never had one);
    ``now`` (aware, default: the clock) is when the run ended.
    """
    moment = now or datetime.now(tz=UTC)
    runs.finish(conn, run_id, "failed" if error else "done", error, now=moment.timestamp())
    if entry_id is not None:
        task_queue.finish(conn, entry_id, now_ms=int(moment.timestamp() * 1000))
    if task_id is None:
        return
    now_iso = iso(moment)
    tasks.log_task_run(
        conn,
        task_id=task_id,
        run_at=now_iso,
        duration_ms=duration_ms,
        status="error" if error else "success",
        result=text,
        error=error,
    )
    current = tasks.get_task(conn, task_id)
    values: dict[str, Any] = {}
    if current is not None and current.status == "active":
        if current.next_run is None:
            values["status"] = "completed"
        elif current.next_run <= now_iso:
            # Slots that came due while this run was queued or running are skipped, as NanoClaw
            # computes the next run only after a run.
            try:
                following = next_run(
                    current.schedule_type,
                    current.schedule_value,
                    parse_iso(current.next_run),
                    moment,
                    timezone,
                )
                values["next_run"] = iso(following) if following else None
            except ValueError:
                pass  # the tick pauses a task whose schedule cannot be computed
    tasks.record_outcome(conn, task_id, last_run=now_iso, last_result=truncate_result(text, error), **values)


def settle_interrupted(
    conn: Connection, *, run_id: int, entry_id: int | None, timezone: str, now: datetime | None = None
) -> None:
    """Close a task run whose worker died mid-run: logged as an error, the run ``abandoned``."""
    moment = now or datetime.now(tz=UTC)
    entry = task_queue.get(conn, entry_id) if entry_id is not None else None
    task = tasks.get_task(conn, entry.task_id) if entry is not None else None
    finish_task_run(
        conn,
        run_id=run_id,
        entry_id=entry_id,
        task_id=task.id if task is not None else None,
        text=None,
        error=INTERRUPTED,
        duration_ms=0,
        timezone=timezone,
        now=moment,
    )
    runs.finish(conn, run_id, "abandoned", "worker stopped", now=moment.timestamp())
