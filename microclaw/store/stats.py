"""Aggregate reads for ``/metrics``: counts and sums over the app tables, computed at scrape time.

Each query is one indexed scan or a small table; nothing here writes. All functions run inside
a read transaction the caller opened.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

_INBOUND = text(
    "SELECT COALESCE(c.channel, 'unknown'), SUM(n) FROM (SELECT chat_jid, COUNT(*) AS n FROM messages"
    " WHERE COALESCE(is_bot_message, 0) = 0 GROUP BY chat_jid) m LEFT JOIN chats c ON c.jid = m.chat_jid"
    " GROUP BY 1"
)
_RUNS = text(
    "SELECT kind, status, COUNT(*), COALESCE(SUM(CASE WHEN finished_at IS NOT NULL"
    " THEN finished_at - started_at END), 0) FROM runs GROUP BY kind, status"
)
_OUTBOX = text("SELECT status, COUNT(*) FROM outbox GROUP BY status")
_USAGE = text(
    "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost), 0),"
    " COALESCE(SUM(steps), 0) FROM agent_usage"
)
_EXEC = text(
    "SELECT COUNT(*), COALESCE(SUM(json_extract(detail, '$.duration_ms')), 0) FROM audit_log"
    " WHERE kind = 'sandbox.exec'"
)
_EARLIEST_DUE = text(
    "SELECT MIN(next_run) FROM scheduled_tasks WHERE status = 'active' AND next_run IS NOT NULL"
)
_PENDING_GROUPS = text(
    "SELECT COUNT(*) FROM group_state g WHERE g.seen_seq < (SELECT COALESCE(MAX(seq), 0) FROM messages"
    " WHERE chat_jid = g.chat_jid)"
)
_TASK_QUEUE = text("SELECT status, COUNT(*) FROM task_queue GROUP BY status")


def inbound_by_connector(conn: Connection) -> dict[str, int]:
    """Stored human messages per connector (the chat's channel)."""
    return {str(ch): int(n) for ch, n in conn.execute(_INBOUND)}


def runs_by_outcome(conn: Connection) -> list[tuple[str, str, int, float]]:
    """(kind, status, count, seconds spent by the finished ones)."""
    return [(k, s, int(n), float(secs)) for k, s, n, secs in conn.execute(_RUNS)]


def outbox_states(conn: Connection) -> dict[str, int]:
    return {str(s): int(n) for s, n in conn.execute(_OUTBOX)}


def usage_totals(conn: Connection) -> tuple[int, int, float, int]:
    """(input tokens, output tokens, cost, model calls) over all recorded runs."""
    inp, out, cost, steps = conn.execute(_USAGE).one()
    return int(inp), int(out), float(cost), int(steps)


def sandbox_exec_totals(conn: Connection) -> tuple[int, float]:
    """(execs, total milliseconds) from the ``sandbox.exec`` audit rows."""
    n, total_ms = conn.execute(_EXEC).one()
    return int(n), float(total_ms)


def earliest_due(conn: Connection) -> str | None:
    """The earliest ``next_run`` (ISO, UTC) of an active scheduled task."""
    value = conn.execute(_EARLIEST_DUE).scalar_one_or_none()
    return str(value) if value is not None else None


def groups_with_unseen(conn: Connection) -> int:
    """Groups holding messages the router has not looked at yet."""
    return int(conn.execute(_PENDING_GROUPS).scalar_one())


def task_queue_states(conn: Connection) -> dict[str, int]:
    return {str(s): int(n) for s, n in conn.execute(_TASK_QUEUE)}
