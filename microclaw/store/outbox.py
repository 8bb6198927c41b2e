"""The outbox: replies written before anything is sent, claimed one at a time per chat.

Row life: ``pending`` -> ``sending`` (claimed, attempt counted) -> ``delivered``; or back to
``pending`` with a later ``next_attempt_at_ms`` after a transient error; or ``failed`` (permanent
error or attempts exhausted); or ``uncertain`` (a send was interrupted by a crash and the
platform cannot deduplicate, so it is never re-sent). An operator may put a failed or uncertain
row back to ``pending`` (`requeue`) or close it as ``discarded`` (``microclaw-host replies``).
The idempotency key is unique: adding the same reply twice keeps one row.

All functions run inside a transaction the caller opened.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select, text

from microclaw.store.db import now_ms, update_statement
from microclaw.store.models import OutboxEntry, table_of

_T = table_of(OutboxEntry)

_ADD = text(
    "INSERT INTO outbox (idempotency_key, chat_jid, text, run_id, status, attempts, next_attempt_at_ms,"
    " created_at_ms) VALUES (:key, :chat, :text, :run_id, 'pending', 0, 0, :now)"
    " ON CONFLICT (idempotency_key) DO NOTHING"
)
_COUNT_FOR_RUN = text("SELECT COUNT(*) FROM outbox WHERE run_id = :run_id")
_COUNT_KEYED = text("SELECT COUNT(*) FROM outbox WHERE run_id = :run_id AND idempotency_key LIKE :pattern")
_HEAD = text(
    "SELECT id, idempotency_key, chat_jid, text, status, attempts, next_attempt_at_ms FROM outbox"
    " WHERE chat_jid = :chat AND status IN ('pending', 'sending') ORDER BY id LIMIT 1"
)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    idempotency_key: str
    chat_jid: str
    text: str
    status: str
    attempts: int
    next_attempt_at_ms: int


def add(conn: Connection, *, key: str, chat_jid: str, text: str, run_id: int | None = None) -> bool:
    """Queue a reply; False when a row with this key already exists (nothing changes)."""
    params = {"key": key, "chat": chat_jid, "text": text, "run_id": run_id, "now": now_ms()}
    return bool(conn.execute(_ADD, params).rowcount == 1)


def count_for_run(conn: Connection, run_id: int) -> int:
    """How many replies a run has queued (any status): >0 means output reached the user's queue."""
    return int(conn.execute(_COUNT_FOR_RUN, {"run_id": run_id}).scalar_one())


def count_keyed(conn: Connection, run_id: int, key_prefix: str) -> int:
    """How many of the run's rows have a key starting with ``key_prefix`` (a LIKE pattern prefix)."""
    return int(conn.execute(_COUNT_KEYED, {"run_id": run_id, "pattern": key_prefix + "%"}).scalar_one())


def head(conn: Connection, chat_jid: str) -> OutboxRow | None:
    """The oldest reply of the chat that is not finished (pending or sending)."""
    row = conn.execute(_HEAD, {"chat": chat_jid}).first()
    return OutboxRow(*row) if row is not None else None


def mark(conn: Connection, row_id: int, status: str, **values: object) -> None:
    """Set a row's status and any other columns."""
    columns = tuple(sorted({"status", *values}))
    conn.execute(update_statement("outbox", columns, "id"), {**values, "status": status, "_key": row_id})


def chats_with_due(conn: Connection, now: int, *, stale_after_ms: int) -> list[str]:
    """Chats with a pending reply nobody is delivering: a retry that has come due, or a new
    reply older than ``stale_after_ms`` (its deliver task was lost)."""
    rows = conn.execute(
        select(_T.c.chat_jid)
        .where(
            _T.c.status == "pending",
            _T.c.next_attempt_at_ms <= now,
            (_T.c.next_attempt_at_ms > 0) | (_T.c.created_at_ms < now - stale_after_ms),
        )
        .distinct()
    )
    return [r[0] for r in rows]


def chats_with_stranded(conn: Connection, claimed_before_ms: int) -> list[str]:
    """Chats with a reply stuck in ``sending`` since before the given time (its sender died)."""
    rows = conn.execute(
        select(_T.c.chat_jid)
        .where(_T.c.status == "sending", _T.c.claimed_at_ms < claimed_before_ms)
        .distinct()
    )
    return [r[0] for r in rows]


def counts(conn: Connection) -> dict[str, int]:
    """Rows per status (for status reports)."""
    return {s: int(n) for s, n in conn.execute(select(_T.c.status, func.count()).group_by(_T.c.status))}


# Rows an operator may act on from the CLI (`microclaw-host replies`).
PROBLEM_STATES = ("failed", "uncertain")
_PROBLEMS = text(
    "SELECT id, chat_jid, status, attempts, created_at_ms, last_error, run_id, substr(text, 1, 80) AS preview"
    " FROM outbox WHERE status IN ('failed', 'uncertain') ORDER BY id"
)
_GET = text("SELECT id, chat_jid, status, attempts, last_error, run_id FROM outbox WHERE id = :id")


def problems(conn: Connection) -> list[dict[str, object]]:
    """Replies that failed or are uncertain, oldest first (with an 80-character preview)."""
    return [dict(r) for r in conn.execute(_PROBLEMS).mappings()]


def get(conn: Connection, row_id: int) -> dict[str, object] | None:
    row = conn.execute(_GET, {"id": row_id}).mappings().first()
    return dict(row) if row is not None else None


def requeue(conn: Connection, row_id: int) -> None:
    """Make a failed or uncertain row ``pending`` and due now, with a fresh attempt budget: the
    sweeper's due-reply scan (or a published deliver) sends it again."""
    mark(conn, row_id, "pending", attempts=0, next_attempt_at_ms=now_ms(), claimed_at_ms=None)
