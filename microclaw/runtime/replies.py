"""Replies that failed or are uncertain, and what an operator may do with them.

``microclaw-host replies list|retry|discard``: `retry` puts the row back to ``pending``, due
now, with a fresh attempt budget (the sweeper finds it due within ``sweep_interval_s`` and hands it to the
outbound worker); `discard` closes it as ``discarded``. Both act only on a
``failed`` or ``uncertain`` row, in one write transaction with an ``outbox.retried`` /
``outbox.discarded`` audit row; anything else is refused with a clear error and changes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from microclaw.store import audit, outbox
from microclaw.store.db import read_tx, write_tx


class ReplyActionError(ValueError):
    """The row does not exist or is not failed/uncertain; nothing was changed."""


def problem_replies(engine: Engine) -> list[dict[str, Any]]:
    with read_tx(engine) as conn:
        return outbox.problems(conn)


def _checked(conn: Any, row_id: int) -> dict[str, Any]:
    row = outbox.get(conn, row_id)
    if row is None:
        raise ReplyActionError(f"there is no reply #{row_id}")
    if row["status"] not in outbox.PROBLEM_STATES:
        raise ReplyActionError(
            f"reply #{row_id} is {row['status']}; only failed or uncertain replies can be"
            " retried or discarded"
        )
    return row


def retry_reply(engine: Engine, row_id: int) -> str:
    """Queue the reply again (due now); returns its chat."""
    with write_tx(engine) as conn:
        row = _checked(conn, row_id)
        outbox.requeue(conn, row_id)
        audit.record(
            conn,
            "outbox.retried",
            chat_jid=str(row["chat_jid"]),
            decision="operator",
            outbox_id=row_id,
            was=row["status"],
            last_error=row["last_error"],
        )
    return str(row["chat_jid"])


def discard_reply(engine: Engine, row_id: int) -> str:
    with write_tx(engine) as conn:
        row = _checked(conn, row_id)
        outbox.mark(conn, row_id, "discarded")
        audit.record(
            conn,
            "outbox.discarded",
            chat_jid=str(row["chat_jid"]),
            decision="operator",
            outbox_id=row_id,
            was=row["status"],
            last_error=row["last_error"],
        )
    return str(row["chat_jid"])
