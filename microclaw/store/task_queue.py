"""The task queue: the one owner of ``task_queue``, scheduled-task runs claimed and not yet done.

An entry is keyed by (task, scheduled slot), so claiming the same slot twice adds nothing. Entry
life: ``pending`` (claimed by the beat tick) -> ``running`` (a group's lease holder started it)
-> ``done`` (its run finished, whatever the outcome). A task with an entry pending or running is
not claimed again (NanoClaw never queues a task id twice).

Does not decide when a task is due (`microclaw.scheduler.tick`), run it (the router) or record
its outcome on the task (`microclaw.scheduler.completion`). All functions run inside a
transaction the caller opened.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

# Prebuilt statements: the router looks for a pending entry every time it chooses work.
_HAS_PENDING = text("SELECT 1 FROM task_queue WHERE chat_jid = :chat AND status = 'pending' LIMIT 1")
_COLUMNS = "id, task_id, chat_jid, scheduled_for, status, claimed_at_ms, finished_at_ms"
_NEXT_PENDING = text(
    f"SELECT {_COLUMNS} FROM task_queue WHERE chat_jid = :chat AND status = 'pending' ORDER BY id LIMIT 1"
)
_GET = text(f"SELECT {_COLUMNS} FROM task_queue WHERE id = :id")
_SET_STATUS = text("UPDATE task_queue SET status = :status WHERE id = :id")
_FINISH = text("UPDATE task_queue SET status = 'done', finished_at_ms = :now WHERE id = :id")
_CLAIM = text(
    "INSERT INTO task_queue (task_id, chat_jid, scheduled_for, status, claimed_at_ms)"
    " VALUES (:task_id, :chat, :slot, 'pending', :now) ON CONFLICT (task_id, scheduled_for) DO NOTHING"
)
_BUSY = text("SELECT DISTINCT task_id FROM task_queue WHERE status IN ('pending', 'running')")
_OPEN_CHATS = text("SELECT DISTINCT chat_jid FROM task_queue WHERE status != 'done'")


@dataclass(frozen=True)
class QueueEntry:
    """One row of ``task_queue``."""

    id: int
    task_id: str
    chat_jid: str
    scheduled_for: str
    status: str  # pending | running | done
    claimed_at_ms: int
    finished_at_ms: int | None


def claim(conn: Connection, *, task_id: str, chat_jid: str, scheduled_for: str, now_ms: int) -> bool:
    """Queue the task's run for the slot ``scheduled_for``; False when that slot was claimed before."""
    params = {"task_id": task_id, "chat": chat_jid, "slot": scheduled_for, "now": now_ms}
    return bool(conn.execute(_CLAIM, params).rowcount == 1)


def busy_task_ids(conn: Connection) -> set[str]:
    """Tasks with an entry pending or running (they must not be queued again)."""
    return {r[0] for r in conn.execute(_BUSY)}


def has_pending(conn: Connection, chat_jid: str) -> bool:
    """Whether the chat has a claimed task run nobody has started."""
    return conn.execute(_HAS_PENDING, {"chat": chat_jid}).first() is not None


def start_next(conn: Connection, chat_jid: str) -> QueueEntry | None:
    """Mark the chat's oldest pending entry ``running`` and return it (as it was); None if none."""
    row = conn.execute(_NEXT_PENDING, {"chat": chat_jid}).first()
    if row is None:
        return None
    conn.execute(_SET_STATUS, {"id": row.id, "status": "running"})
    return QueueEntry(*row)


def get(conn: Connection, entry_id: int) -> QueueEntry | None:
    row = conn.execute(_GET, {"id": entry_id}).first()
    return QueueEntry(*row) if row is not None else None


def finish(conn: Connection, entry_id: int, *, now_ms: int) -> None:
    """Mark the entry ``done`` (its run is over, whatever the outcome)."""
    conn.execute(_FINISH, {"id": entry_id, "now": now_ms})


def chats_with_open(conn: Connection) -> set[str]:
    """Every chat with an entry not yet done."""
    return {r[0] for r in conn.execute(_OPEN_CHATS)}
