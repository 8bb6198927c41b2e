"""A connector's own small state file: cursors and per-chat facts, in one SQLite file per connector.

The one way connectors keep state. A connector that reads a platform by position (an IMAP UID,
a chat.db ROWID, a Discord message id per channel) declares ``state_file`` on its class and
opens it with `BaseConnector.open_state`: ``<data_dir>/<state_file>``, next to the app data but
never in the app database (a connector does not touch the store). The file may be shared by the
host (which listens and advances the cursor) and the outbound worker (which reads per-chat facts
to address a reply), so it runs in WAL mode with a busy timeout and ``synchronous=FULL``. Each
write commits before it returns; that commit is what makes a cursor advance durable.

Most state is JSON values by key in the ``state`` table. A sibling whose state predates that
table keeps its own table in the same file through `ConnectorState.execute` (Discord's
``cursors``), so existing files keep their format. Not here: the SQLite mailbox behind the local
and fake channels (`microclaw.connectors.mailbox`), which is their platform, not their state.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from microclaw.private import private_sqlite
from microclaw.sqlite import ThreadConnections


class ConnectorState:
    """Durable JSON values by key, in one SQLite file owned by one connector.

    ``clock`` gives wall-clock seconds; it stamps each write (``updated_at_ms``, used by `prune`).
    """

    def __init__(
        self, path: Path, *, busy_timeout_s: float = 30.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.clock = clock
        self._connections = ThreadConnections(path, timeout_s=busy_timeout_s, synchronous="FULL")
        private_sqlite(path)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                " updated_at_ms INTEGER NOT NULL)"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (``synchronous=FULL``: a cursor advance must survive a power cut)."""
        yield self._connections.get()

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on a table of the sibling's own in this file; its rows. A write
        commits (durably) before this returns."""
        with self._connect() as db:
            return db.execute(sql, args).fetchall()

    def get(self, key: str, default: Any = None) -> Any:
        with self._connect() as db:
            row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serializable) under ``key``; durable when this returns."""
        self.put_many({key: value})

    def put_many(self, values: dict[str, Any]) -> None:
        """Store several keys in one transaction."""
        now = int(self.clock() * 1000)
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO state (key, value, updated_at_ms) VALUES (?, ?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
                    " updated_at_ms = excluded.updated_at_ms",
                    [(k, json.dumps(v), now) for k, v in values.items()],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def delete(self, key: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM state WHERE key = ?", (key,))

    def prune(self, prefix: str, older_than_ms: int) -> int:
        """Delete keys starting with ``prefix`` last written before ``older_than_ms``."""
        with self._connect() as db:
            cur = db.execute(
                "DELETE FROM state WHERE key >= ? AND key < ? AND updated_at_ms < ?",
                (prefix, prefix + "\U0010ffff", older_than_ms),
            )
            return int(cur.rowcount)

    def close(self) -> None:
        self._connections.close()
