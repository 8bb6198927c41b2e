"""Scheduled tasks and their run logs: NanoClaw's task CRUD (contract §5.3).

Keeps the reference semantics: `create_task` defaults ``context_mode`` to ``isolated`` (an
unknown mode becomes ``isolated`` too) and stores an empty ``script`` as NULL; `update_task` is
a partial update of prompt, script, schedule_type, schedule_value, next_run and status, and an
empty patch changes nothing; `delete_task` removes the task's run logs before the task; lists
are ordered by ``created_at`` newest first. Times are NanoClaw's ISO strings.

Also the queries MicroClaw's scheduler needs: the due tasks (`due_tasks`, and `has_due` for
beat's once-a-second look), a group's active tasks (`count_active`, for the per-group cap), the
next few runs (`next_scheduled`, for status) and a run's outcome on the task (`record_outcome`).
This module is the one owner of ``scheduled_tasks`` and ``task_run_logs``.

Does not validate schedules or compute ``next_run`` (`microclaw.scheduler.schedule` does), claim
due runs (`microclaw.scheduler.tick`), decide what a run leaves on its task
(`microclaw.scheduler.completion`) or who may manage a task (`microclaw.core.ipc`). All
functions run inside a transaction the caller opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, text, update

from microclaw.store.models import ScheduledTask, TaskRunLog, table_of

__all__ = [
    "CONTEXT_MODES",
    "UPDATABLE_FIELDS",
    "Task",
    "TaskRun",
    "count_active",
    "create_task",
    "delete_task",
    "due_tasks",
    "get_all_tasks",
    "get_task",
    "get_tasks_for_group",
    "has_due",
    "log_task_run",
    "next_scheduled",
    "record_outcome",
    "task_run_logs",
    "update_task",
]

_T = table_of(ScheduledTask)
_L = table_of(TaskRunLog)
# Beat asks this every second (workers/beat.py); prebuilt like the other hot statements.
_HAS_DUE = text(
    "SELECT 1 FROM scheduled_tasks"
    " WHERE status = 'active' AND next_run IS NOT NULL AND next_run <= :now LIMIT 1"
)

CONTEXT_MODES = ("group", "isolated")
UPDATABLE_FIELDS = frozenset({"prompt", "script", "schedule_type", "schedule_value", "next_run", "status"})


@dataclass(frozen=True)
class Task:
    """One row of ``scheduled_tasks``."""

    id: str
    group_folder: str
    chat_jid: str
    prompt: str
    schedule_type: str
    schedule_value: str
    next_run: str | None
    last_run: str | None
    last_result: str | None
    status: str | None
    created_at: str
    context_mode: str | None
    script: str | None


@dataclass(frozen=True)
class TaskRun:
    """One row of ``task_run_logs``."""

    id: int
    task_id: str
    run_at: str
    duration_ms: int
    status: str
    result: str | None
    error: str | None


def _now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _to_task(row: Any) -> Task:
    return Task(**{name: getattr(row, name) for name in Task.__dataclass_fields__})


def create_task(
    conn: Connection,
    *,
    id: str,
    group_folder: str,
    chat_jid: str,
    prompt: str,
    schedule_type: str,
    schedule_value: str,
    next_run: str | None,
    status: str = "active",
    context_mode: str | None = None,
    script: str | None = None,
    created_at: str | None = None,
) -> Task:
    """Insert a task (NanoClaw's createTask); an existing id raises IntegrityError."""
    values = {
        "id": id,
        "group_folder": group_folder,
        "chat_jid": chat_jid,
        "prompt": prompt,
        "schedule_type": schedule_type,
        "schedule_value": schedule_value,
        "next_run": next_run,
        "status": status,
        "created_at": created_at or _now_iso(),
        "context_mode": context_mode if context_mode in CONTEXT_MODES else "isolated",
        "script": script or None,
    }
    conn.execute(insert(_T).values(**values))
    task = get_task(conn, id)
    assert task is not None
    return task


def get_task(conn: Connection, task_id: str) -> Task | None:
    row = conn.execute(select(_T).where(_T.c.id == task_id)).first()
    return _to_task(row) if row is not None else None


def update_task(conn: Connection, task_id: str, **patch: Any) -> bool:
    """Partially update a task; returns whether a row changed. An empty patch does nothing.

    Only `UPDATABLE_FIELDS` may be patched (anything else raises ValueError); an empty script
    is stored as NULL.
    """
    unknown = set(patch) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"cannot update task field(s) {', '.join(sorted(unknown))}")
    if not patch:
        return False
    if "script" in patch:
        patch["script"] = patch["script"] or None
    return bool(conn.execute(update(_T).where(_T.c.id == task_id).values(**patch)).rowcount)


def delete_task(conn: Connection, task_id: str) -> bool:
    """Delete the task's run logs, then the task; returns whether the task existed."""
    conn.execute(delete(_L).where(_L.c.task_id == task_id))
    return bool(conn.execute(delete(_T).where(_T.c.id == task_id)).rowcount)


def get_tasks_for_group(conn: Connection, group_folder: str) -> list[Task]:
    """The group's tasks, newest ``created_at`` first."""
    rows = conn.execute(
        select(_T).where(_T.c.group_folder == group_folder).order_by(_T.c.created_at.desc(), _T.c.id)
    )
    return [_to_task(r) for r in rows]


def count_active(conn: Connection, group_folder: str) -> int:
    """How many of the group's tasks are ``active`` (the per-group cap counts these)."""
    query = (
        select(func.count()).select_from(_T).where(_T.c.group_folder == group_folder, _T.c.status == "active")
    )
    return int(conn.execute(query).scalar_one())


def get_all_tasks(conn: Connection) -> list[Task]:
    """Every task, newest ``created_at`` first."""
    return [_to_task(r) for r in conn.execute(select(_T).order_by(_T.c.created_at.desc(), _T.c.id))]


def log_task_run(
    conn: Connection,
    *,
    task_id: str,
    run_at: str,
    duration_ms: int,
    status: str,
    result: str | None = None,
    error: str | None = None,
) -> int:
    """Append a run-log row (``status`` is ``success`` or ``error``); returns its id."""
    if status not in ("success", "error"):
        raise ValueError(f"run status must be 'success' or 'error', not {status!r}")
    inserted = conn.execute(
        insert(_L).values(
            task_id=task_id, run_at=run_at, duration_ms=duration_ms, status=status, result=result, error=error
        )
    )
    key = inserted.inserted_primary_key
    assert key is not None
    return int(key[0])


def task_run_logs(conn: Connection, task_id: str) -> list[TaskRun]:
    """The task's run logs, oldest first."""
    rows = conn.execute(select(_L).where(_L.c.task_id == task_id).order_by(_L.c.run_at, _L.c.id))
    return [TaskRun(*r) for r in rows]


# --- MicroClaw's scheduler queries ---------------------------------------------------------


def due_tasks(conn: Connection, now_iso: str) -> list[Task]:
    """Active tasks whose ``next_run`` is at or before ``now_iso``, the longest due first."""
    rows = conn.execute(
        select(_T)
        .where(_T.c.status == "active", _T.c.next_run.is_not(None), _T.c.next_run <= now_iso)
        .order_by(_T.c.next_run)
    )
    return [_to_task(r) for r in rows]


def has_due(conn: Connection, now_iso: str) -> bool:
    """Whether any active task is due at ``now_iso``."""
    return conn.execute(_HAS_DUE, {"now": now_iso}).first() is not None


def next_scheduled(conn: Connection, limit: int = 5) -> list[Task]:
    """The active tasks with a next run, soonest first (for status reports)."""
    rows = conn.execute(
        select(_T)
        .where(_T.c.status == "active", _T.c.next_run.is_not(None))
        .order_by(_T.c.next_run)
        .limit(limit)
    )
    return [_to_task(r) for r in rows]


def record_outcome(
    conn: Connection, task_id: str, *, last_run: str, last_result: str | None, **patch: Any
) -> bool:
    """After a run: set ``last_run`` and ``last_result``, and ``next_run``/``status`` if given.

    Returns whether the task exists. Other fields raise ValueError.
    """
    unknown = set(patch) - {"next_run", "status"}
    if unknown:
        raise ValueError(f"cannot set task field(s) {', '.join(sorted(unknown))} with an outcome")
    values = {"last_run": last_run, "last_result": last_result, **patch}
    return bool(conn.execute(update(_T).where(_T.c.id == task_id).values(**values)).rowcount)
