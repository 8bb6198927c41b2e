"""A tiny SQLite mailbox: the "platform" behind the local chat channel and the fake connector.

Replies are stored with a unique idempotency key, so storing the same reply twice keeps one
row: sends through a mailbox are idempotent. Readers page by the autoincrement id. Each mailbox
is its own file, owned by the connector that uses it, not by the app database.

A mailbox is the platform those two channels talk to, not connector state: cursors and
per-chat facts of real platforms go in a `microclaw.connectors.state.ConnectorState`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from microclaw.private import private_sqlite
from microclaw.sqlite import ThreadConnections


@dataclass(frozen=True)
class MailboxItem:
    id: int
    chat_id: str
    text: str
    idempotency_key: str
    created_at_ms: int


class Mailbox:
    """Append-only, deduplicated reply storage in one SQLite file."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = path
        self._connections = ThreadConnections(path, timeout_s=busy_timeout_s)
        private_sqlite(path)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS replies (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " chat_id TEXT NOT NULL, text TEXT NOT NULL,"
                " idempotency_key TEXT NOT NULL UNIQUE, created_at_ms INTEGER NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS ix_replies_chat ON replies(chat_id, id)")
            db.execute("CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        yield self._connections.get()

    def put(self, chat_id: str, text: str, idempotency_key: str) -> int:
        """Store a reply unless its key exists; returns the row id either way."""
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO replies (chat_id, text, idempotency_key, created_at_ms)"
                " VALUES (?, ?, ?, ?)",
                (chat_id, text, idempotency_key, int(time.time() * 1000)),
            )
            return int(
                db.execute("SELECT id FROM replies WHERE idempotency_key = ?", (idempotency_key,)).fetchone()[
                    0
                ]
            )

    def after(self, after_id: int = 0, *, chat_id: str | None = None, limit: int = 100) -> list[MailboxItem]:
        """Replies with id > ``after_id``, oldest first, optionally for one chat."""
        query = "SELECT id, chat_id, text, idempotency_key, created_at_ms FROM replies WHERE id > ?"
        args: list[object] = [after_id]
        if chat_id is not None:
            query += " AND chat_id = ?"
            args.append(chat_id)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [MailboxItem(*r) for r in rows]

    def bump(self, key: str) -> int:
        """Increment a named counter and return its new value (shared by every process)."""
        with self._connect() as db:
            return int(
                db.execute(
                    "INSERT INTO counters (key, value) VALUES (?, 1)"
                    " ON CONFLICT(key) DO UPDATE SET value = value + 1"
                    " RETURNING value",
                    (key,),
                ).fetchone()[0]
            )

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])
