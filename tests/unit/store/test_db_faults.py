"""Store faults from real second processes: a stuck write-lock holder, SQLite's lock held past
the busy timeout. Writers get a clear `TransientStoreError` ("database busy") within their
timeout instead of queueing forever, and write again once the holder lets go."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from microclaw.errors import TransientStoreError
from microclaw.store.db import create_sqlite_engine, migrate, store_fault, write_tx

HOLD_FLOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""
HOLD_SQLITE = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(120)
"""


def holder(script: str, path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()


@pytest.fixture
def quick(tmp_path: Path) -> Engine:
    db = tmp_path / "app.db"
    migrate(db)
    engine = create_sqlite_engine(db, busy_timeout_s=0.3)
    yield engine
    engine.dispose()


def write(engine: Engine) -> None:
    with write_tx(engine) as conn:
        conn.execute(text("INSERT INTO audit_log (ts_ms, kind) VALUES (1, 'test.write')"))


def test_a_writer_queued_behind_a_stuck_write_lock_gets_database_busy_then_recovers(quick, tmp_path) -> None:
    proc = holder(HOLD_FLOCK, tmp_path / "app.db-writelock")
    try:
        with pytest.raises(TransientStoreError, match=r"^database busy"):
            write(quick)
    finally:
        stop(proc)
    write(quick)  # the kernel dropped the dead holder's lock; the abandoned wait left none behind
    write(quick)


def test_sqlite_lock_held_past_the_busy_timeout_fails_every_queued_writer_clearly(quick, tmp_path) -> None:
    proc = holder(HOLD_SQLITE, tmp_path / "app.db")
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            write(quick)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)  # bounded: before, each waited on the flock with no timeout
        assert not any(t.is_alive() for t in threads)
    finally:
        stop(proc)
    assert len(errors) == 4
    assert all(isinstance(e, TransientStoreError) and str(e).startswith("database busy") for e in errors)
    write(quick)


def test_disk_full_is_a_transient_fault_with_its_reason() -> None:
    import sqlite3

    assert store_fault(sqlite3.OperationalError("database or disk is full")) == "disk full"
    assert store_fault(OSError(28, "No space left on device")) == "disk full"
    assert store_fault(sqlite3.OperationalError("database is locked")) == "database busy"
    assert store_fault(sqlite3.OperationalError("no such table: x")) is None
