"""Read-only queries that follow one message through the tables (for ``microclaw-host why``).

A message is joined to the rest by what the pipeline already writes: its ``seq`` falls in a
run's ``(prev_cursor_seq, to_seq]`` range, a ``router.not_triggered`` row's
``(after_seq, to_seq]`` range, or an audit row names its ``message_id``; replies are outbox rows
of those runs; spend is ``agent_usage`` by run; tool calls are audit rows of the group written
while the run was going. Nothing here writes; every function runs inside a read transaction
the caller opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

_MESSAGE = text(
    "SELECT id, chat_jid, sender, sender_name, content, timestamp, is_from_me, is_bot_message, seq,"
    " received_at_ms FROM messages WHERE id = :id"
)
_FIND = text(
    "SELECT id FROM messages WHERE chat_jid = :chat AND instr(lower(content), lower(:text)) > 0"
    " ORDER BY seq DESC LIMIT :limit"
)
_CHAT = text("SELECT jid, name, channel FROM chats WHERE jid = :jid")
_RUNS = text(
    "SELECT id, kind, status, started_at_ms, finished_at, error, worker, message_count, prev_cursor_seq,"
    " to_seq FROM runs WHERE chat_jid = :chat AND kind = 'messages' AND prev_cursor_seq < :seq"
    " AND to_seq >= :seq ORDER BY id"
)
_USAGE = text(
    "SELECT COALESCE(SUM(steps), 0), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
    " COALESCE(SUM(cost), 0), MAX(model) FROM agent_usage WHERE run_id = :run"
)
_OUTBOX = text(
    "SELECT id, status, attempts, created_at_ms, delivered_at_ms, last_error, platform_message_id,"
    " next_attempt_at_ms FROM outbox WHERE run_id = :run ORDER BY id"
)
_AUDIT_FOR_MESSAGE = text(
    "SELECT id, ts_ms, kind, decision, detail FROM audit_log WHERE message_id = :id ORDER BY id"
)
_NOT_TRIGGERED = text(
    "SELECT id, ts_ms, kind, decision, detail FROM audit_log WHERE kind = 'router.not_triggered'"
    " AND chat_jid = :chat AND json_extract(detail, '$.after_seq') < :seq"
    " AND json_extract(detail, '$.to_seq') >= :seq ORDER BY id"
)
_AUDIT_DURING = text(
    "SELECT id, ts_ms, kind, decision, detail FROM audit_log WHERE ts_ms BETWEEN :start AND :end"
    " AND (chat_jid = :chat OR json_extract(detail, '$.group') = :folder"
    " OR json_extract(detail, '$.run_id') = :run) ORDER BY id LIMIT :limit"
)
_AUDIT_FOR_OUTBOX = text(
    "SELECT id, ts_ms, kind, decision, detail FROM audit_log WHERE kind LIKE 'outbox.%'"
    " AND chat_jid = :chat AND json_extract(detail, '$.outbox_id') = :outbox ORDER BY id"
)


@dataclass(frozen=True)
class AuditRow:
    id: int
    ts_ms: int
    kind: str
    decision: str | None
    detail: dict[str, Any]


def _audit_rows(rows: Any) -> list[AuditRow]:
    return [
        AuditRow(int(r.id), int(r.ts_ms), r.kind, r.decision, json.loads(r.detail) if r.detail else {})
        for r in rows
    ]


def message(conn: Connection, message_id: str) -> dict[str, Any] | None:
    """The stored message with this id (ids are globally unique), or None."""
    row = conn.execute(_MESSAGE, {"id": message_id}).mappings().first()
    return dict(row) if row is not None else None


def find_message_ids(conn: Connection, chat_jid: str, substring: str, *, limit: int = 5) -> list[str]:
    """Ids of the chat's newest messages whose text contains ``substring`` (case-insensitive)."""
    return [r[0] for r in conn.execute(_FIND, {"chat": chat_jid, "text": substring, "limit": limit})]


def chat(conn: Connection, jid: str) -> dict[str, Any] | None:
    row = conn.execute(_CHAT, {"jid": jid}).mappings().first()
    return dict(row) if row is not None else None


def runs_covering(conn: Connection, chat_jid: str, seq: int) -> list[dict[str, Any]]:
    """Message runs whose batch included ``seq``, oldest first (a retry is a second run)."""
    return [dict(r) for r in conn.execute(_RUNS, {"chat": chat_jid, "seq": seq}).mappings()]


def run_usage(conn: Connection, run_id: int) -> dict[str, Any]:
    steps, inp, out, cost, model = conn.execute(_USAGE, {"run": run_id}).one()
    return {
        "steps": int(steps),
        "input_tokens": int(inp),
        "output_tokens": int(out),
        "cost": cost,
        "model": model,
    }


def run_replies(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(_OUTBOX, {"run": run_id}).mappings()]


def audit_for_message(conn: Connection, message_id: str) -> list[AuditRow]:
    return _audit_rows(conn.execute(_AUDIT_FOR_MESSAGE, {"id": message_id}))


def not_triggered(conn: Connection, chat_jid: str, seq: int) -> list[AuditRow]:
    """``router.not_triggered`` rows whose batch covered ``seq``."""
    return _audit_rows(conn.execute(_NOT_TRIGGERED, {"chat": chat_jid, "seq": seq}))


def audit_during(
    conn: Connection, *, chat_jid: str, folder: str, run_id: int, start_ms: int, end_ms: int, limit: int = 50
) -> list[AuditRow]:
    """Audit rows of the group (by chat, folder or run id) written between two moments."""
    params = {
        "chat": chat_jid,
        "folder": folder,
        "run": run_id,
        "start": start_ms,
        "end": end_ms,
        "limit": limit,
    }
    return _audit_rows(conn.execute(_AUDIT_DURING, params))


def audit_for_outbox(conn: Connection, chat_jid: str, outbox_id: int) -> list[AuditRow]:
    return _audit_rows(conn.execute(_AUDIT_FOR_OUTBOX, {"chat": chat_jid, "outbox": outbox_id}))
