"""The embedded SQLite broker: a small subclass of kombu's SQLAlchemy transport.

What it changes, each measured on the stock transport (see docs/architecture.md):
- every connection gets WAL and ``synchronous=NORMAL``; lock waits are short jittered retries
  (`retry_locked`) instead of SQLite's coarse busy-handler sleeps; connections are kept per
  thread (``SingletonThreadPool``: a QueuePool leaked on reconnect and broke a worker after ~40
  reconnects, and NullPool made every publish open, close and checkpoint the file);
- the polling interval is a class attribute (the stock ``polling_interval`` transport option is
  passed to ``create_engine`` and crashes);
- an empty poll first asks SQLite's ``PRAGMA data_version`` whether any other connection
  committed since the last empty poll, and skips the query if not. That makes a 20 ms polling
  interval cost a fraction of a percent of a core when idle. A full query still runs at least
  once a second as a backstop;
- publish and fetch are single SQL statements on kombu's own tables (see `SQLiteChannel`);
- `purge_consumed()` deletes delivered rows, which the stock transport keeps forever.

`celery_broker_options()` turns the configured URL into Celery settings; any other URL (Redis,
RabbitMQ) passes through untouched, so moving off SQLite is a one-setting change.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from queue import Empty
from typing import Any

import kombu
from kombu.exceptions import KombuError
from kombu.transport import sqlalchemy as kombu_sqla
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from sqlalchemy import create_engine, event
from sqlalchemy.pool import SingletonThreadPool

from microclaw.private import private_sqlite
from microclaw.sqlite import ThreadConnections
from microclaw.store.db import configure_sqlite_connection, retry_locked, write_lock

logger = logging.getLogger(__name__)

SQLITE_PREFIX = "sqla+"
FULL_POLL_EVERY_S = 1.0
BUSY_TIMEOUT_S = 30.0


def sqlite_path(url: str) -> Path:
    """The file behind ``sqla+sqlite:///PATH`` or ``sqlite:///PATH``."""
    tail = url.removeprefix(SQLITE_PREFIX)
    if not tail.startswith("sqlite:///"):
        raise ValueError(f"not a SQLite URL: {url!r}")
    return Path(tail.removeprefix("sqlite:///"))


class SQLiteChannel(kombu_sqla.Channel):
    """kombu SQLAlchemy channel with SQLite tuning, cheap empty polls and one-statement claims.

    kombu's own tables and schema are kept (kombu creates them); only the two hot operations
    are replaced: a publish is one INSERT, a fetch is one ``UPDATE ... RETURNING`` that claims
    the oldest visible row. Both run on a per-thread connection and hold the write lock for
    microseconds (kombu's ORM versions held it for a millisecond or more, which under load made
    publishers wait ~10 ms at the median).
    """

    _engines: dict[str, Any] = {}

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        private_sqlite(sqlite_path(self.connection.client.hostname))  # task payloads: 0600
        self._connections = ThreadConnections(
            sqlite_path(self.connection.client.hostname),
            timeout_s=BUSY_TIMEOUT_S,
            configure=lambda db: configure_sqlite_connection(db, BUSY_TIMEOUT_S),
        )
        self._queue_ids: dict[str, int] = {}
        self._empty_at: dict[str, tuple[int, float]] = {}

    def _engine_from_config(self) -> Any:
        url = self.connection.client.hostname
        private_sqlite(sqlite_path(url))
        engine = create_engine(
            url,
            poolclass=SingletonThreadPool,
            pool_size=8,
            connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # kombu's remaining ORM paths (schema, size, purge) rely on SQLite's own busy wait.
            configure_sqlite_connection(dbapi_conn, BUSY_TIMEOUT_S, keep_busy_timeout=True)

        return engine

    def _db(self) -> sqlite3.Connection:
        """This thread's raw connection to the broker file (reopened after fork)."""
        return self._connections.get()

    def _open(self) -> Any:
        # kombu creates its tables on first use with check-then-create; two processes starting
        # together raced into "table already exists". The per-file write lock serializes that.
        with write_lock(str(sqlite_path(self.connection.client.hostname))).held():
            return super()._open()

    def _queue_id(self, queue: str) -> int:
        qid = self._queue_ids.get(queue)
        if qid is None:
            self._open()

            def create() -> int:
                db = self._db()
                db.execute(
                    "INSERT INTO kombu_queue (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (queue,)
                )
                return int(db.execute("SELECT id FROM kombu_queue WHERE name = ?", (queue,)).fetchone()[0])

            # kombu's own get-or-create raced (UNIQUE failures) when a publisher and a consumer
            # declared the same queue at once; this cannot.
            qid = retry_locked(create, timeout_s=BUSY_TIMEOUT_S)
            self._queue_ids[queue] = qid
        return qid

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        self._queue_id(queue)

    # kombu's two bases name the second parameter differently (message vs payload).
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        qid = self._queue_id(queue)
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")  # kombu's DateTime storage format
        body = dumps(payload)
        retry_locked(lambda: self._db().execute(_PUT, (qid, stamp, body)), timeout_s=BUSY_TIMEOUT_S)

    def _data_version(self) -> int | None:
        try:
            return int(self._db().execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self._connections.close()
            return None

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        version = self._data_version()
        seen = self._empty_at.get(queue)
        now = time.monotonic()
        if (
            version is not None
            and seen is not None
            and seen[0] == version
            and now - seen[1] < FULL_POLL_EVERY_S
        ):
            raise Empty()
        qid = self._queue_id(queue)
        row = retry_locked(
            lambda: self._db().execute(_CLAIM, (qid, qid)).fetchone(), timeout_s=BUSY_TIMEOUT_S
        )
        if row is None:
            if version is not None:
                self._empty_at[queue] = (version, now)
            raise Empty()
        return loads(bytes_to_str(row[0]))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._connections.close()
        super().close()


# Claim the oldest visible message of a queue in one statement (atomic; no read-then-write race).
_CLAIM = (
    "UPDATE kombu_message SET visible = 0 WHERE id = (SELECT id FROM kombu_message"
    " WHERE queue_id = ? AND visible = 1 ORDER BY timestamp, id LIMIT 1) AND queue_id = ? RETURNING payload"
)
_PUT = "INSERT INTO kombu_message (queue_id, visible, timestamp, payload, version) VALUES (?, 1, ?, ?, 1)"


class SQLiteTransport(kombu_sqla.Transport):
    """kombu transport for ``sqla+sqlite`` URLs; ``polling_interval`` is set by the app factory."""

    Channel = SQLiteChannel
    polling_interval = 0.02


def dispose_engines() -> None:
    """Forget engines inherited across fork (call in ``worker_process_init``)."""
    for engine, _session in list(SQLiteChannel._engines.values()):
        engine.dispose(close=False)
    SQLiteChannel._engines.clear()


def celery_broker_options(url: str, polling_interval: float) -> dict[str, Any]:
    """Celery settings for the broker ``url`` (SQLite gets the tuned transport)."""
    if url.startswith(SQLITE_PREFIX + "sqlite"):
        SQLiteTransport.polling_interval = polling_interval
        return {
            "broker_url": url.removeprefix(SQLITE_PREFIX),
            "broker_transport": "microclaw.broker.transport:SQLiteTransport",
            "broker_connection_retry_on_startup": True,
        }
    return {"broker_url": url, "broker_connection_retry_on_startup": True}


def purge_consumed(url: str) -> int:
    """Delete delivered (invisible) messages from a SQLite broker; returns how many. Safe any time."""
    if not url.startswith(SQLITE_PREFIX + "sqlite"):
        return 0
    path = sqlite_path(url)
    if not path.exists():
        return 0
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        try:
            return db.execute("DELETE FROM kombu_message WHERE visible = 0").rowcount
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise
    finally:
        db.close()


def queue_depths(url: str, queues: Iterable[str] = ()) -> dict[str, int]:
    """Waiting messages per queue: every queue on a SQLite broker (read from its file; {} when
    there is no file yet), the named ``queues`` on any other broker (kombu's passive declare,
    which Redis and RabbitMQ answer with a message count). An unreachable broker gives {}."""
    if url.startswith(SQLITE_PREFIX + "sqlite"):
        return _sqlite_queue_depths(sqlite_path(url))
    conn = kombu.Connection(url, connect_timeout=2)
    try:
        with conn, conn.channel() as channel:
            return {name: _declared_depth(conn, channel, name) for name in queues}
    except (OSError, KombuError, *conn.connection_errors) as exc:
        logger.warning("broker queue depths unavailable: %s", exc)
        return {}


def _declared_depth(conn: kombu.Connection, channel: Any, name: str) -> int:
    try:
        return int(channel.queue_declare(queue=name, passive=True).message_count)
    except conn.channel_errors:
        return 0  # never declared: nothing was published there yet (Redis keeps no empty queues)


def _sqlite_queue_depths(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    db = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        rows = db.execute(
            "SELECT q.name, COUNT(m.id) FROM kombu_queue q LEFT JOIN kombu_message m"
            " ON m.queue_id = q.id AND m.visible = 1 GROUP BY q.name"
        ).fetchall()
        return {str(name): int(count) for name, count in rows}
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()
