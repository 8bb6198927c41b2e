"""One SQLite connection per thread and process, for files MicroClaw opens without SQLAlchemy.

The broker's hot path and the small files connectors own (the local mailbox, cursor state)
keep a connection open per thread: opening one costs a file open and pragmas, and closing the
last connection to a WAL file checkpoints and deletes the WAL, which cost more than the writes
themselves. A connection is never shared across a fork: a new process opens its own.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path


class ThreadConnections:
    """Hands each thread of each process its own open connection to ``path``."""

    def __init__(
        self,
        path: Path | str,
        *,
        timeout_s: float = 30.0,
        synchronous: str = "NORMAL",
        configure: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._timeout = timeout_s
        self._synchronous = synchronous
        self._configure = configure
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode, WAL), opened on first use."""
        db = getattr(self._local, "db", None)
        if db is None or self._local.pid != os.getpid():
            db = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            if self._configure is not None:
                self._configure(db)
            else:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={self._synchronous}")
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def close(self) -> None:
        """Close this thread's connection, if it has one."""
        db = getattr(self._local, "db", None)
        if db is not None and self._local.pid == os.getpid():
            db.close()
        self._local.db = None
