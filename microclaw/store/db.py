"""Engines, transactions and migrations for the app database.

Every SQLite connection gets WAL and ``synchronous=NORMAL``. The driver's own transaction
handling is switched off and MicroClaw emits ``BEGIN IMMEDIATE`` for writes (so a writer waits
for the lock up front instead of failing on upgrade under WAL) and plain ``BEGIN`` for reads.
Waiting for the write lock is done by `retry_locked` (sub-millisecond jittered retries up to
the busy timeout), not by SQLite's busy handler, whose coarse sleeps caused long tail
latencies. Engines keep a small pool of connections (closing the last connection of a WAL
database checkpoints and deletes the WAL, an expensive step on every transaction otherwise);
pooled engines are created after fork, never inherited. `migrate()` runs Alembic to head; any
failure raises `PermanentStoreError`. A database already stamped with the newest revision is left
alone without importing Alembic (about 0.2 CPU-s per process start; every role boots through it).

Faults that pass when the cause clears surface as `TransientStoreError` whose message starts
with the reason (`store_fault`): "database busy" (the write lock, ours or SQLite's, held past
the busy timeout) and "disk full". Callers retry, or answer 503 with the message.

This module knows nothing about what the tables mean; repositories do.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import URL, Connection, Engine, TextClause, create_engine, event, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from microclaw.errors import PermanentStoreError, TransientStoreError
from microclaw.private import private_sqlite

logger = logging.getLogger(__name__)
T = TypeVar("T")

ALEMBIC_DIR = Path(__file__).resolve().parent.parent.parent / "alembic"


def now_ms() -> int:
    return int(time.time() * 1000)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's SQLITE_FULL ("database or disk is full") or ENOSPC."""
    orig = getattr(exc, "orig", exc)
    if isinstance(orig, OSError) and orig.errno in {errno.ENOSPC, errno.EDQUOT}:
        return True
    return "disk is full" in str(orig).lower()


def store_fault(exc: BaseException) -> str | None:
    """The transient reason behind a store error ("database busy", "disk full"), or None."""
    if is_disk_full(exc):
        return "disk full"
    if isinstance(exc, (sqlite3.OperationalError, OperationalError)) and is_locked(exc):
        return "database busy"
    return None


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked / busy" (someone else holds the write lock)."""
    message = str(getattr(exc, "orig", exc)).lower()
    return "locked" in message or "busy" in message


def retry_locked(
    attempt: Callable[[], T], *, timeout_s: float, on_retry: Callable[[], object] | None = None
) -> T:
    """Call ``attempt`` until it stops failing with "database is locked", for up to ``timeout_s``.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25… ms between tries, which turned
    short lock waits into 100-400 ms tail latencies under load; this waits 0.1-4 ms with jitter.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.0002
    while True:
        try:
            return attempt()
        except (sqlite3.OperationalError, OperationalError) as exc:
            if not is_locked(exc) or time.monotonic() >= deadline:
                raise
        if on_retry is not None:
            on_retry()
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 0.004)


def configure_sqlite_connection(
    dbapi_conn: sqlite3.Connection, busy_timeout_s: float, *, keep_busy_timeout: bool = False
) -> None:
    """WAL and ``synchronous=NORMAL``. Afterwards no busy handler (callers wait through
    `retry_locked`) unless ``keep_busy_timeout``, for code paths that are not ours to wrap."""
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    if not keep_busy_timeout:
        cur.execute("PRAGMA busy_timeout=0")
    cur.close()


def create_sqlite_engine(db_path: Path | str, *, busy_timeout_s: float = 30.0, pooled: bool = True) -> Engine:
    """An engine on a SQLite file (created 0600 with its parent directory, see
    `microclaw.private`) with MicroClaw's pragmas.

    ``pooled`` keeps a few connections open: opening one costs a file open and pragmas, and
    closing the last one checkpoints and deletes the WAL, which made every transaction ~3x
    slower. Create pooled engines after fork (Celery children build theirs lazily).
    """
    path = Path(db_path)
    private_sqlite(path)
    _busy_timeouts[str(path)] = busy_timeout_s
    pool_args: dict[str, Any] = {"pool_size": 4, "max_overflow": 16} if pooled else {"poolclass": NullPool}
    engine = create_engine(
        URL.create("sqlite", database=str(path)),  # not parsed: "%40" in a path stays "%40"
        connect_args={"timeout": busy_timeout_s, "isolation_level": None, "check_same_thread": False},
        **pool_args,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        configure_sqlite_connection(dbapi_conn, busy_timeout_s)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        raw = conn.connection.dbapi_connection
        assert raw is not None
        retry_locked(lambda: raw.execute(f"BEGIN {mode}"), timeout_s=busy_timeout_s)

    return engine


_busy_timeouts: dict[str, float] = {}


def _flock_within(fd: int, timeout_s: float) -> bool:
    """``flock(fd, LOCK_EX)`` for up to ``timeout_s``; whether it was taken.

    The uncontended case is one non-blocking call. Otherwise a helper thread sleeps in the
    kernel's queue (so waiters are still woken in turn, not polling); on timeout the helper
    owns ``fd`` from then on, releasing and closing it once its flock returns, so the caller
    must not use ``fd`` again.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    taken = threading.Event()
    mutex = threading.Lock()
    abandoned = False

    def wait() -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with mutex:
            if abandoned:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                return
            taken.set()

    threading.Thread(target=wait, name="writelock-wait", daemon=True).start()
    if taken.wait(timeout_s):
        return True
    with mutex:
        if taken.is_set():
            return True
        abandoned = True
    return False


class _WriteLock:
    """A per-database OS file lock that MicroClaw writers queue on before ``BEGIN IMMEDIATE``.

    SQLite lets waiting writers only poll for its lock; with several busy processes on two
    cores, polling writers burned up to half their CPU retrying and still saw 50-150 ms waits.
    ``flock`` puts waiters to sleep in the kernel and wakes one when the holder is done; the
    kernel drops it if the holder dies (SIGKILL included). Each thread has its own descriptor,
    so threads of one process exclude each other too. Writers that do not take it (the sqlite3
    shell, Alembic) are still handled by `retry_locked`.

    A writer waits at most ``timeout_s`` (the database's busy timeout) in the queue, then gets
    `TransientStoreError` ("database busy"): a holder stuck behind a foreign lock must not
    stall every writer behind it for a busy timeout each.
    """

    def __init__(self, db_path: str) -> None:
        self.path = f"{db_path}-writelock"
        self.timeout_s = _busy_timeouts.get(db_path, 30.0)
        self._local = threading.local()

    @contextmanager
    def held(self) -> Iterator[None]:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                if is_disk_full(exc):
                    raise TransientStoreError(f"disk full: cannot create {self.path}: {exc}") from exc
                raise
            local.fd, local.pid, local.depth = fd, os.getpid(), 0
        if local.depth == 0 and not _flock_within(local.fd, self.timeout_s):
            local.pid = None  # the abandoned descriptor now belongs to the waiting helper
            raise TransientStoreError(
                f"database busy: waited {self.timeout_s:g} s for the write lock ({self.path})"
            )
        local.depth += 1
        try:
            yield
        finally:
            local.depth -= 1
            if local.depth == 0:
                fcntl.flock(local.fd, fcntl.LOCK_UN)


_write_locks: dict[str, _WriteLock] = {}


def write_lock(db_path: str) -> _WriteLock:
    """The process-wide `_WriteLock` of the SQLite file at ``db_path``."""
    lock = _write_locks.get(db_path)
    if lock is None:
        lock = _write_locks.setdefault(db_path, _WriteLock(db_path))
    return lock


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction (``BEGIN IMMEDIATE``); commits on success, rolls back on error.

    Writers queue on the database's `_WriteLock` first. Lock timeouts and a full disk surface
    as `TransientStoreError` (retry; the message starts with the reason), anything else as is.
    """
    try:
        with write_lock(str(engine.url.database)).held(), engine.begin() as conn:
            yield conn
    except (sqlite3.OperationalError, OperationalError, OSError) as exc:
        fault = store_fault(exc)
        if fault is not None:
            raise TransientStoreError(f"{fault}: {getattr(exc, 'orig', exc)}") from exc
        raise


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read transaction (deferred ``BEGIN``): a consistent snapshot that takes no write lock."""
    try:
        with engine.execution_options(sqlite_begin="DEFERRED").begin() as conn:
            yield conn
    except (sqlite3.OperationalError, OperationalError) as exc:
        fault = store_fault(exc)
        if fault is not None:
            raise TransientStoreError(f"{fault}: {getattr(exc, 'orig', exc)}") from exc
        raise


@functools.lru_cache(maxsize=256)
def update_statement(table: str, columns: tuple[str, ...], key: str) -> TextClause:
    """``UPDATE table SET c = :c, ... WHERE key = :_key``, built once per column set.

    Names come from code, never from input; callers pass the key's value as ``_key``.
    """
    assignments = ", ".join(f"{c} = :{c}" for c in columns)
    return text(f"UPDATE {table} SET {assignments} WHERE {key} = :_key")


def _alembic_config(engine_url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    # ConfigParser interpolates "%": a data dir with "@" or "%" is URL-quoted to "%40"/"%25".
    cfg.set_main_option("sqlalchemy.url", engine_url.replace("%", "%%"))
    cfg.attributes["configure_logging"] = False
    return cfg


_REVISION = re.compile(r"""^(revision|down_revision)\s*(?::[^=]+)?=\s*(None|"[^"]*"|'[^']*')\s*$""", re.M)


@functools.cache
def head_revision() -> str | None:
    """The newest revision in ``alembic/versions``, read from each script's ``revision`` and
    ``down_revision`` lines without importing Alembic; None when that is not one linear chain
    (then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (ALEMBIC_DIR / "versions").glob("*.py"):
        found = {key: value.strip("\"'") for key, value in _REVISION.findall(script.read_text())}
        if "revision" not in found or "down_revision" not in found:
            return None
        revisions.add(found["revision"])
        if found["down_revision"] != "None":
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and len(parents) == len(revisions) - 1 else None


def _stamped_revision(conn: Connection) -> str | None:
    """The revision stamped in the database (None: a new file, or no Alembic table yet)."""
    try:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except OperationalError:
        return None


@contextmanager
def _migration_lock(path: Path) -> Iterator[None]:
    """One migrating process per database: the roles all migrate at boot, and on a new install
    the ones that wait here find the database at head and never load Alembic. No timeout: the
    holder finishes or dies (the kernel drops its ``flock``)."""
    fd = os.open(f"{path}-migratelock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def migrate(db_path: Path | str, *, busy_timeout_s: float = 30.0) -> str:
    """Bring the database at ``db_path`` to the newest schema; returns the head revision.

    Raises `PermanentStoreError` with the cause when a migration fails: the boot must stop.
    """
    path = Path(db_path)
    engine = create_sqlite_engine(path, busy_timeout_s=busy_timeout_s, pooled=False)
    try:
        head = head_revision()

        def at_head() -> bool:
            with engine.connect() as conn:
                return head is not None and _stamped_revision(conn) == head

        if at_head():
            return str(head)
        with _migration_lock(path):
            if at_head():  # another process migrated while this one waited
                return str(head)
            from alembic.runtime.migration import MigrationContext

            from alembic import command

            cfg = _alembic_config(str(engine.url))
            with engine.connect() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                revision = MigrationContext.configure(conn).get_current_revision()
    except (SQLAlchemyError, OSError, Exception) as exc:  # alembic raises plain Exceptions too
        raise PermanentStoreError(f"migration of {path} failed: {exc}") from exc
    finally:
        engine.dispose()
    logger.info("database migrated", extra={"db_path": str(path), "revision": revision})
    return str(revision)
