"""The audit log: one row per policy or tool decision, rejected input or dropped work.

`record()` writes inside the caller's transaction (so the decision and its effect commit
together); `record_now()` opens its own short write transaction for edges that have none.
Details are JSON; callers pass plain data and never message bodies or secrets.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import Connection, Engine, select, text

from microclaw.store.db import now_ms, write_tx
from microclaw.store.models import AuditEntry, table_of

logger = logging.getLogger(__name__)
_T = table_of(AuditEntry)
_INSERT = text(
    "INSERT INTO audit_log (ts_ms, kind, chat_jid, message_id, decision, detail)"
    " VALUES (:ts, :kind, :chat, :message_id, :decision, :detail)"
)


def record(
    conn: Connection,
    kind: str,
    *,
    chat_jid: str | None = None,
    message_id: str | None = None,
    decision: str | None = None,
    **detail: Any,
) -> None:
    """Append an audit row in the current transaction."""
    conn.execute(
        _INSERT,
        {
            "ts": now_ms(),
            "kind": kind,
            "chat": chat_jid,
            "message_id": message_id,
            "decision": decision,
            "detail": json.dumps(detail, default=str, sort_keys=True) if detail else None,
        },
    )


def record_now(engine: Engine, kind: str, **fields: Any) -> None:
    """Append an audit row in a transaction of its own."""
    with write_tx(engine) as conn:
        record(conn, kind, **fields)


def recent(conn: Connection, *, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Newest audit rows first, optionally of one kind; ``detail`` decoded."""
    query = select(_T).order_by(_T.c.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(_T.c.kind == kind)
    rows = []
    for row in conn.execute(query).mappings():
        item = dict(row)
        item["detail"] = json.loads(item["detail"]) if item["detail"] else {}
        rows.append(item)
    return rows
