"""The broker file: queues, messages, exchanges, bindings and consumers in one SQLite file.

Tables (created on first use, all ``broker_*``):
- ``broker_queue(name, expires_ms, idle_since_ms)``: declared queues; ``expires_ms`` is the
  AMQP ``x-expires`` argument (a queue with no consumer for that long is deleted);
- ``broker_message(id, queue, owner, deliveries, payload)``: ``owner`` is NULL while the
  message waits, and the consuming connection's id while it is delivered but not acked. An
  ack deletes the row; a requeue, a graceful shutdown or the owner's death sets ``owner``
  back to NULL, so the message is ready again at its original place (order is by ``id``);
- ``broker_exchange(name, type)`` and ``broker_binding(exchange, routing_key, pattern, queue)``:
  routing shared by every process (kombu's virtual transports keep them in process memory);
- ``broker_consumer(owner, queue)``: who waits on which queue: publishers ring those doorbells,
  and a queue with a live consumer never expires.

Every statement is short and runs in autocommit on a per-thread connection (`ThreadConnections`)
with WAL; a locked database is retried with short jittered sleeps (`retry_locked`).

A deleted, replaced or corrupt file: each thread checks about once a second that its
connection still points at the file on disk and that the file still has SQLite's header.
Everything the broker holds can be rebuilt from the app database (the sweeper re-derives kicks
and deliveries; consumers declare their queues again when they reconnect), so a corrupt file
is moved aside (``<name>.corrupt-<ms>``, with its -wal/-shm) and a fresh one created; a
deleted one is simply recreated. The callback given to `on_reset` is told (the app records a
``broker.reset`` audit row), and the operation raises `BrokerFileReset` (a
``sqlite3.OperationalError``, so kombu treats it as a lost connection: Celery reconnects and
declares its queues, bindings and consumers on the new file). A file from
the previous transport (kombu's ``kombu_queue``/``kombu_message``) has its waiting messages
moved over once, in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from microclaw.private import private_sqlite
from microclaw.sqlite import ThreadConnections
from microclaw.store.db import configure_sqlite_connection, retry_locked, write_lock

BUSY_TIMEOUT_S = 30.0
T = TypeVar("T")
logger = logging.getLogger(__name__)

# How often each thread checks that its broker file is still there and still SQLite.
CHECK_EVERY_S = 1.0
_HEADER = b"SQLite format 3\x00"
_CORRUPT = ("file is not a database", "malformed", "not a database")
_reset_hook: Callable[[Path, Path | None, str], None] | None = None


class BrokerFileReset(sqlite3.OperationalError):
    """The broker file was deleted, replaced or corrupt and a fresh one is in place: reconnect."""


def on_reset(callback: Callable[[Path, Path | None, str], None] | None) -> None:
    """Call ``callback(path, moved_to, reason)`` whenever this process resets a broker file
    (``moved_to`` is where a corrupt file went, None when it had been deleted)."""
    global _reset_hook
    _reset_hook = callback


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


# (path, pid) -> (file identity, descriptor) used only to read the header. Never closed while
# the file is current: closing any descriptor of a file drops every POSIX lock this process
# holds on it, SQLite's included (measured: consumers stopped taking messages).
_header_fds: dict[tuple[str, int], tuple[tuple[int, int], int]] = {}


def _has_header(path: Path) -> bool:
    ident = _identity(path)
    if ident is None:
        return True  # deleted: not corrupt
    key = (str(path), os.getpid())
    held = _header_fds.get(key)
    if held is None or held[0] != ident:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        # The previous descriptor (a file moved aside or deleted) is left open on purpose.
        _header_fds[key] = held = (ident, fd)
    head = os.pread(held[1], len(_HEADER), 0)
    return head == _HEADER or head == b""  # an empty file is a new database


def is_corrupt(exc: BaseException) -> bool:
    """Whether ``exc`` says the file is not (or no longer) a readable SQLite database."""
    return (
        isinstance(exc, sqlite3.DatabaseError)
        and not isinstance(exc, sqlite3.OperationalError)
        and any(m in str(exc).lower() for m in _CORRUPT)
    )


SCHEMA = """
CREATE TABLE IF NOT EXISTS broker_queue (
    name TEXT PRIMARY KEY,
    expires_ms INTEGER,
    idle_since_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS broker_message (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    owner TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS broker_message_ready ON broker_message (queue, id) WHERE owner IS NULL;
CREATE INDEX IF NOT EXISTS broker_message_owned ON broker_message (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS broker_exchange (
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS broker_binding (
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    pattern TEXT,
    queue TEXT NOT NULL,
    PRIMARY KEY (exchange, routing_key, queue)
);
CREATE INDEX IF NOT EXISTS broker_binding_queue ON broker_binding (queue);
CREATE TABLE IF NOT EXISTS broker_consumer (
    owner TEXT NOT NULL,
    queue TEXT NOT NULL,
    PRIMARY KEY (queue, owner)
);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


class BrokerFile:
    """Typed operations on one broker file, safe from many threads and processes."""

    _ready: set[tuple[str, int]] = set()  # (path, pid) whose schema this process has ensured

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()  # identity and next check of this thread's file
        self._connections = ThreadConnections(
            path,
            timeout_s=BUSY_TIMEOUT_S,
            configure=lambda db: configure_sqlite_connection(db, BUSY_TIMEOUT_S),
        )

    # -- plumbing ---------------------------------------------------------------------------

    def db(self) -> sqlite3.Connection:
        """This thread's connection, with the schema in place; raises `BrokerFileReset` once
        after the file was found deleted, replaced or corrupt (and recreated)."""
        key = (str(self.path), os.getpid())
        local = self._local
        now = time.monotonic()
        if getattr(local, "pid", None) != os.getpid():
            local.pid, local.identity, local.next_check = os.getpid(), None, 0.0
        if local.identity is not None and now >= local.next_check:
            local.next_check = now + CHECK_EVERY_S
            if not _has_header(self.path):
                self._reset(f"the broker file {self.path} is corrupt (no SQLite header)")
            elif _identity(self.path) != local.identity:
                self._reset(f"the broker file {self.path} was deleted or replaced")
        if key not in BrokerFile._ready:
            try:
                self._ensure_schema()
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                self._reset(f"the broker file {self.path} is corrupt ({exc})")
            BrokerFile._ready.add(key)
        db = self._connections.get()
        if local.identity is None:
            local.identity, local.next_check = _identity(self.path), now + CHECK_EVERY_S
        return db

    def _reset(self, reason: str) -> None:
        """Move a corrupt file aside (or accept a deleted one), create a fresh file, tell the
        `on_reset` callback, and raise `BrokerFileReset`. Safe when several threads or
        processes notice together: the first one under the write lock does the work."""
        self._connections.close()
        BrokerFile._ready.discard((str(self.path), os.getpid()))
        self._local.identity = None
        moved: Path | None = None
        with write_lock(str(self.path)).held():
            existed = self.path.exists()
            if existed and not _healthy(self.path):
                moved = self.path.with_name(f"{self.path.name}.corrupt-{now_ms()}")
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(f"{self.path}{suffix}", f"{moved}{suffix}")
            # A file some connection re-created empty after a deletion has no tables yet.
            fresh = moved is not None or not existed or not _has_schema(self.path)
            if fresh:  # created under the lock: whoever comes next finds it healthy
                self._ensure_schema()
                self._connections.close()
        logger.error("%s; %s", reason, f"moved aside to {moved}" if moved else "now on a fresh file")
        if _reset_hook is not None and fresh:
            try:
                _reset_hook(self.path, moved, reason)
            except Exception:
                logger.exception("could not record the broker file reset")
        raise BrokerFileReset(f"{reason}; reconnect to the fresh file")

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` retried while the database is locked."""
        return retry_locked(lambda: self._checked(fn), timeout_s=BUSY_TIMEOUT_S)

    def _checked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self.db())
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            self._reset(f"the broker file {self.path} is corrupt ({exc})")
            raise  # unreachable: _reset raises

    def tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in one ``BEGIN IMMEDIATE`` transaction, retried while locked."""

        def attempt() -> T:
            db = self.db()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return retry_locked(lambda: self._checked(lambda _db: attempt()), timeout_s=BUSY_TIMEOUT_S)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._connections.close()

    def _ensure_schema(self) -> None:
        private_sqlite(self.path)  # task payloads: 0600 (and its -wal/-shm), whatever the umask
        # Processes starting together on a fresh file serialize on the file's write lock.
        with write_lock(str(self.path)).held():
            db = self._connections.get()
            retry_locked(lambda: db.executescript(SCHEMA), timeout_s=BUSY_TIMEOUT_S)
            retry_locked(lambda: _in_tx(db, _import_kombu_tables), timeout_s=BUSY_TIMEOUT_S)

    # -- queues -----------------------------------------------------------------------------

    def declare_queue(self, name: str, expires_ms: int | None) -> None:
        self.run(
            lambda db: db.execute(
                "INSERT INTO broker_queue (name, expires_ms, idle_since_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET expires_ms = excluded.expires_ms,"
                " idle_since_ms = excluded.idle_since_ms",
                (name, expires_ms, now_ms()),
            )
        )

    def has_queue(self, name: str) -> bool:
        row = self.run(lambda db: db.execute("SELECT 1 FROM broker_queue WHERE name = ?", (name,)).fetchone())
        return row is not None

    def delete_queue(self, name: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM broker_message WHERE queue = ?", (name,))
            db.execute("DELETE FROM broker_binding WHERE queue = ?", (name,))
            db.execute("DELETE FROM broker_queue WHERE name = ?", (name,))

        self.tx(delete)

    def size(self, name: str) -> int:
        return int(
            self.run(
                lambda db: db.execute(
                    "SELECT COUNT(*) FROM broker_message WHERE queue = ? AND owner IS NULL", (name,)
                ).fetchone()[0]
            )
        )

    def purge(self, name: str) -> int:
        return int(
            self.run(
                lambda db: (
                    db.execute(
                        "DELETE FROM broker_message WHERE queue = ? AND owner IS NULL", (name,)
                    ).rowcount
                )
            )
        )

    # -- messages ---------------------------------------------------------------------------

    def put(self, queue: str, payload: str) -> list[str]:
        """Append a message; returns the owners consuming ``queue`` (to ring)."""
        self.run(
            lambda db: db.execute(
                "INSERT INTO broker_message (queue, payload) VALUES (?, ?)", (queue, payload)
            )
        )
        return self.waiting_on(queue)

    def waiting_on(self, queue: str) -> list[str]:
        rows = self.run(
            lambda db: db.execute("SELECT owner FROM broker_consumer WHERE queue = ?", (queue,)).fetchall()
        )
        return [str(r[0]) for r in rows]

    def claim(self, queue: str, owner: str | None) -> tuple[int, str, int] | None:
        """Take the oldest ready message of ``queue``: for ``owner`` until acked, or for good
        (deleted) when ``owner`` is None. Returns (id, payload, earlier deliveries) or None.

        The ready row is found with a read (no write lock when the queue is empty), then taken
        with a conditional write; losing a race to another consumer just tries the next row.
        """
        while True:
            found = self.run(
                lambda db: db.execute(
                    "SELECT id FROM broker_message WHERE queue = ? AND owner IS NULL ORDER BY id LIMIT 1",
                    (queue,),
                ).fetchone()
            )
            if found is None:
                return None
            msg_id = int(found[0])
            args: tuple[object, ...]
            if owner is None:
                sql, args = _TAKE_FOR_GOOD, (msg_id,)
            else:
                sql, args = _TAKE_UNTIL_ACKED, (owner, msg_id)
            row = self.run(lambda db, sql=sql, args=args: db.execute(sql, args).fetchone())  # type: ignore[misc]
            if row is not None:
                return msg_id, str(row[0]), int(row[1])

    def ack(self, msg_ids: Iterable[int], owner: str) -> None:
        """Delete delivered messages that ``owner`` still holds (a late ack of a message that
        was already handed back changes nothing: it will be delivered again)."""
        ids = [(i, owner) for i in msg_ids]
        if ids:
            self.run(lambda db: db.executemany("DELETE FROM broker_message WHERE id = ? AND owner = ?", ids))

    def release(self, msg_ids: Iterable[int], owner: str) -> list[str]:
        """Make messages ``owner`` holds ready again at their original place; returns their queues."""
        ids = [(i, owner) for i in msg_ids]
        if not ids:
            return []

        def release(db: sqlite3.Connection) -> list[str]:
            queues: set[str] = set()
            for args in ids:
                row = db.execute(
                    "UPDATE broker_message SET owner = NULL WHERE id = ? AND owner = ? RETURNING queue", args
                ).fetchone()
                if row is not None:
                    queues.add(str(row[0]))
            return sorted(queues)

        return self.tx(release)

    # -- exchanges and bindings -------------------------------------------------------------

    def declare_exchange(self, name: str, type_: str) -> None:
        self.run(
            lambda db: db.execute(
                "INSERT INTO broker_exchange (name, type) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, type_),
            )
        )

    def exchange_type(self, name: str) -> str | None:
        row = self.run(
            lambda db: db.execute("SELECT type FROM broker_exchange WHERE name = ?", (name,)).fetchone()
        )
        return None if row is None else str(row[0])

    def delete_exchange(self, name: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM broker_binding WHERE exchange = ?", (name,))
            db.execute("DELETE FROM broker_exchange WHERE name = ?", (name,))

        self.tx(delete)

    def bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        self.run(
            lambda db: db.execute(
                "INSERT INTO broker_binding (exchange, routing_key, pattern, queue) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (exchange, routing_key, pattern, queue),
            )
        )

    def unbind(self, exchange: str, routing_key: str, queue: str) -> None:
        self.run(
            lambda db: db.execute(
                "DELETE FROM broker_binding WHERE exchange = ? AND routing_key = ? AND queue = ?",
                (exchange, routing_key, queue),
            )
        )

    def bindings(self, exchange: str) -> list[tuple[str, str | None, str]]:
        rows = self.run(
            lambda db: db.execute(
                "SELECT routing_key, pattern, queue FROM broker_binding WHERE exchange = ?", (exchange,)
            ).fetchall()
        )
        return [(str(r[0]), r[1], str(r[2])) for r in rows]

    def all_bindings(self) -> list[tuple[str, str, str]]:
        rows = self.run(
            lambda db: db.execute("SELECT queue, exchange, routing_key FROM broker_binding").fetchall()
        )
        return [(str(q), str(e), str(k)) for q, e, k in rows]

    def exchanges(self) -> list[str]:
        return [
            str(r[0]) for r in self.run(lambda db: db.execute("SELECT name FROM broker_exchange").fetchall())
        ]

    # -- consumers, the dead and the expired ------------------------------------------------

    def add_consumer(self, owner: str, queue: str) -> None:
        self.run(
            lambda db: db.execute(
                "INSERT INTO broker_consumer (owner, queue) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (owner, queue),
            )
        )

    def remove_consumer(self, owner: str, queue: str | None = None) -> None:
        def remove(db: sqlite3.Connection) -> None:
            where, args = (
                ("owner = ?", (owner,)) if queue is None else ("owner = ? AND queue = ?", (owner, queue))
            )
            gone = [
                r[0] for r in db.execute(f"DELETE FROM broker_consumer WHERE {where} RETURNING queue", args)
            ]
            db.executemany(
                "UPDATE broker_queue SET idle_since_ms = ? WHERE name = ?", [(now_ms(), q) for q in gone]
            )

        self.tx(remove)

    def owners(self) -> set[str]:
        """Every consumer id the file mentions (as a waiting consumer or a message's owner)."""

        def read(db: sqlite3.Connection) -> set[str]:
            owned = db.execute("SELECT DISTINCT owner FROM broker_message WHERE owner IS NOT NULL").fetchall()
            waiting = db.execute("SELECT DISTINCT owner FROM broker_consumer").fetchall()
            return {str(r[0]) for r in owned + waiting}

        return self.run(read)

    def forget_owner(self, owner: str) -> list[str]:
        """A consumer is gone: its delivered messages become ready again (in their original
        order), its consumer rows go, its queues start their expiry clock. Returns the queues
        that got messages back."""

        def forget(db: sqlite3.Connection) -> list[str]:
            released = [
                str(r[0])
                for r in db.execute(
                    "UPDATE broker_message SET owner = NULL WHERE owner = ? RETURNING queue", (owner,)
                ).fetchall()
            ]
            gone = [
                r[0]
                for r in db.execute("DELETE FROM broker_consumer WHERE owner = ? RETURNING queue", (owner,))
            ]
            db.executemany(
                "UPDATE broker_queue SET idle_since_ms = ? WHERE name = ?", [(now_ms(), q) for q in gone]
            )
            return sorted(set(released))

        return self.tx(forget)

    def expire_queues(self) -> list[str]:
        """Delete queues with an ``x-expires`` that had no consumer for that long (reply and
        pidbox queues of clients that went away); returns their names."""

        def expired(db: sqlite3.Connection) -> list[str]:
            return [
                str(r[0])
                for r in db.execute(
                    "SELECT name FROM broker_queue q WHERE expires_ms IS NOT NULL"
                    " AND idle_since_ms + expires_ms < ?"
                    " AND NOT EXISTS (SELECT 1 FROM broker_consumer c WHERE c.queue = q.name)",
                    (now_ms(),),
                ).fetchall()
            ]

        if not self.run(expired):  # a read first: nothing to do takes no write lock
            return []

        def expire(db: sqlite3.Connection) -> list[str]:
            names = expired(db)
            for name in names:
                db.execute("DELETE FROM broker_message WHERE queue = ?", (name,))
                db.execute("DELETE FROM broker_binding WHERE queue = ?", (name,))
                db.execute("DELETE FROM broker_queue WHERE name = ?", (name,))
            return names

        return self.tx(expire)


_TAKE_FOR_GOOD = "DELETE FROM broker_message WHERE id = ? AND owner IS NULL RETURNING payload, deliveries"
_TAKE_UNTIL_ACKED = (
    "UPDATE broker_message SET owner = ?, deliveries = deliveries + 1"
    " WHERE id = ? AND owner IS NULL RETURNING payload, deliveries - 1"
)


def _in_tx(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], None]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        fn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _import_kombu_tables(db: sqlite3.Connection) -> None:
    """Move the waiting messages of kombu's SQLAlchemy transport tables over, once, in order."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"kombu_queue", "kombu_message"} <= tables:
        return
    db.execute(
        "INSERT INTO broker_message (queue, payload)"
        " SELECT q.name, m.payload FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id"
        " WHERE m.visible = 1 ORDER BY m.timestamp, m.id"
    )
    db.execute("DROP TABLE kombu_message")
    db.execute("DROP TABLE kombu_queue")


def _healthy(path: Path) -> bool:
    """Whether a fresh connection can read ``path``'s schema (the header and page 1)."""
    if not _has_header(path):
        return False
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return not is_corrupt(exc)
    return True


def _has_schema(path: Path) -> bool:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        found = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'broker_message'").fetchone()
    finally:
        db.close()
    return found is not None


def open_existing(path: Path) -> sqlite3.Connection | None:
    """A plain connection to an existing broker file (None when there is none yet)."""
    if not path.exists():
        return None
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    return db


# Set on every task message by `microclaw.runtime.celery_app` (``before_task_publish``).
SENT_HEADER = "microclaw_sent_ms"


def ready_waits(path: Path, queues: Iterable[str], *, now: int, scan: int = 20) -> dict[str, int]:
    """How long the oldest ready message of each queue has been waiting to be taken, in ms.

    Read-only. A message's wait starts when it was published (`SENT_HEADER`) or, for a
    countdown/ETA task, when it fell due; a message not yet due does not count. The first
    ``scan`` ready messages of each queue are looked at (they are the oldest, in order). Queues
    with nothing ready, and messages published without the header, are left out; no broker
    file yet gives {}.
    """
    import json
    from datetime import datetime

    db = open_existing(path)
    if db is None:
        return {}
    waits: dict[str, int] = {}
    try:
        for queue in queues:
            rows = db.execute(
                "SELECT payload FROM broker_message WHERE queue = ? AND owner IS NULL ORDER BY id LIMIT ?",
                (queue, scan),
            ).fetchall()
            for (payload,) in rows:
                try:
                    headers = json.loads(payload).get("headers") or {}
                    since = int(headers[SENT_HEADER])
                    eta = headers.get("eta")
                    if eta:
                        since = max(since, int(datetime.fromisoformat(eta).timestamp() * 1000))
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
                if now >= since:
                    waits[queue] = max(waits.get(queue, 0), now - since)
    except sqlite3.OperationalError:
        return waits
    finally:
        db.close()
    return waits
