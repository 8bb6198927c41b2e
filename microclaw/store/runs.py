"""Agent runs: the one owner of the ``runs`` table.

A run row is written in the transaction that chooses the work, before the agent starts: what it
consumed (``to_seq``, ``message_count``), the group's cursors before it (``prev_cursor_seq``,
``prev_seen_seq``, so a failure can roll back), the lease token it runs under (host tools fence
with it) and, for a scheduled task, its ``task_queue`` entry. Status goes ``running`` ->
``done`` | ``failed`` | ``abandoned`` (a later lease holder found it ``running``: its worker died).

Does not decide anything: when to start, roll back or abandon a run is the router's
(`microclaw.pipeline.router`); what a task run leaves behind is `microclaw.scheduler.completion`'s.
All functions run inside a transaction the caller opened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, text

# Prebuilt statements: the router runs these on every message run (see pipeline/leases.py).
_COLUMNS = (
    "id, chat_jid, kind, task_run_id, lease_token, prev_cursor_seq, prev_seen_seq, to_seq,"
    " message_count, status, worker"
)
_START = text(
    "INSERT INTO runs (chat_jid, kind, task_run_id, lease_token, prev_cursor_seq, prev_seen_seq, to_seq,"
    " message_count, status, started_at_ms, started_at, worker) VALUES (:chat_jid, :kind, :task_run_id,"
    " :lease_token, :prev_cursor_seq, :prev_seen_seq, :to_seq, :message_count, 'running', :started_at_ms,"
    " :started_at, :worker) RETURNING id"
)
_FINISH = text("UPDATE runs SET status = :status, finished_at = :finished_at, error = :error WHERE id = :id")
_GET = text(f"SELECT {_COLUMNS} FROM runs WHERE id = :id")
_RUNNING = text(f"SELECT {_COLUMNS} FROM runs WHERE chat_jid = :chat AND status = 'running' ORDER BY id")
_TO_SEQ = text("SELECT to_seq FROM runs WHERE id = :id")
_EXTEND = text(
    "UPDATE runs SET to_seq = :to_seq, message_count = message_count + :n"
    " WHERE id = :id AND status = 'running'"
)
_LEASE = text("SELECT chat_jid, lease_token FROM runs WHERE id = :id")
_HAS_RUNNING = text("SELECT 1 FROM runs WHERE chat_jid = :chat AND status = 'running' LIMIT 1")
_CHATS_RUNNING = text("SELECT DISTINCT chat_jid FROM runs WHERE status = 'running'")
_COUNT_RUNNING = text("SELECT COUNT(*) FROM runs WHERE status = 'running'")
_TASK_CONTEXT_MODE = text(
    "SELECT st.context_mode FROM runs r JOIN task_queue q ON q.id = r.task_run_id"
    " JOIN scheduled_tasks st ON st.id = q.task_id WHERE r.id = :id"
)


@dataclass(frozen=True)
class RunRow:
    """What callers read back from a ``runs`` row (times and the error are write-only)."""

    id: int
    chat_jid: str
    kind: str  # "messages" | "task"
    task_run_id: int | None  # the task_queue entry of a task run
    lease_token: int
    prev_cursor_seq: int
    prev_seen_seq: int
    to_seq: int
    message_count: int
    status: str  # running | done | failed | abandoned
    worker: str | None


def start(
    conn: Connection,
    chat_jid: str,
    kind: str,
    *,
    lease_token: int,
    worker: str,
    task_run_id: int | None = None,
    prev_cursor_seq: int = 0,
    prev_seen_seq: int = 0,
    to_seq: int = 0,
    message_count: int = 0,
    now: float | None = None,
) -> int:
    """Record a ``running`` run; returns its id. ``now`` is wall-clock seconds (default: now)."""
    moment = time.time() if now is None else now
    params = {
        "chat_jid": chat_jid,
        "kind": kind,
        "task_run_id": task_run_id,
        "lease_token": lease_token,
        "prev_cursor_seq": prev_cursor_seq,
        "prev_seen_seq": prev_seen_seq,
        "to_seq": to_seq,
        "message_count": message_count,
        "started_at_ms": int(moment * 1000),
        "started_at": moment,
        "worker": worker,
    }
    return int(conn.execute(_START, params).scalar_one())


def finish(
    conn: Connection, run_id: int, status: str, error: str | None = None, *, now: float | None = None
) -> None:
    """Set the run's final status (``done``, ``failed`` or ``abandoned``), error and end time."""
    finished = time.time() if now is None else now
    conn.execute(_FINISH, {"id": run_id, "status": status, "finished_at": finished, "error": error})


def get(conn: Connection, run_id: int) -> RunRow | None:
    row = conn.execute(_GET, {"id": run_id}).first()
    return RunRow(*row) if row is not None else None


def running(conn: Connection, chat_jid: str) -> list[RunRow]:
    """The group's runs still marked ``running``, oldest first (after taking the lease: abandoned)."""
    return [RunRow(*r) for r in conn.execute(_RUNNING, {"chat": chat_jid})]


def has_running(conn: Connection, chat_jid: str) -> bool:
    """Whether the group has a run marked ``running``."""
    return conn.execute(_HAS_RUNNING, {"chat": chat_jid}).first() is not None


def chats_with_running(conn: Connection) -> set[str]:
    """Every chat with a run marked ``running``."""
    return {r[0] for r in conn.execute(_CHATS_RUNNING)}


def count_running(conn: Connection) -> int:
    """How many runs are marked ``running`` (for status reports)."""
    return int(conn.execute(_COUNT_RUNNING).scalar_one())


def to_seq(conn: Connection, run_id: int) -> int | None:
    """The newest message seq the run has consumed; None when there is no such run."""
    value = conn.execute(_TO_SEQ, {"id": run_id}).scalar_one_or_none()
    return None if value is None else int(value)


def extend(conn: Connection, run_id: int, *, to_seq: int, added: int) -> bool:
    """Let a running run consume ``added`` more messages, up to ``to_seq``; False if not running."""
    return bool(conn.execute(_EXTEND, {"id": run_id, "to_seq": to_seq, "n": added}).rowcount == 1)


def lease_of(conn: Connection, run_id: int) -> tuple[str, int] | None:
    """(chat_jid, lease token) the run was started under, for fencing writes made on its behalf."""
    row = conn.execute(_LEASE, {"id": run_id}).first()
    return (row.chat_jid, int(row.lease_token)) if row is not None else None


def task_context_mode(conn: Connection, run_id: int) -> str | None:
    """The ``context_mode`` of the scheduled task a task run executes; None for other runs."""
    return conn.execute(_TASK_CONTEXT_MODE, {"id": run_id}).scalar_one_or_none()
