"""store.db: pragmas, write/read transactions, lock retries and cached statements."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from microclaw.errors import TransientStoreError
from microclaw.store import db
from tests.conftest import file_mode


def test_connections_use_wal_and_normal_sync(engine: Engine) -> None:
    with db.read_tx(engine) as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 0  # we retry, not SQLite


def test_write_tx_commits_or_rolls_back(engine: Engine) -> None:
    with db.write_tx(engine) as conn:
        conn.execute(text("INSERT INTO router_state (key, value) VALUES ('a', '1')"))
    with pytest.raises(ZeroDivisionError), db.write_tx(engine) as conn:
        conn.execute(text("INSERT INTO router_state (key, value) VALUES ('b', '2')"))
        1 / 0  # noqa: B018
    with db.read_tx(engine) as conn:
        assert conn.execute(text("SELECT key FROM router_state")).scalars().all() == ["a"]


def test_a_held_write_lock_becomes_a_transient_error_and_reads_still_work(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db.migrate(path)
    engine = db.create_sqlite_engine(path, busy_timeout_s=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # a writer that does not use our flock (a shell, Alembic)
        with pytest.raises(TransientStoreError, match="database busy"), db.write_tx(engine):
            pass
        with db.read_tx(engine) as conn:  # a deferred read takes no write lock
            assert conn.execute(text("SELECT COUNT(*) FROM chats")).scalar_one() == 0
        other.execute("ROLLBACK")
        with db.write_tx(engine) as conn:
            conn.execute(text("INSERT INTO router_state (key, value) VALUES ('k', 'v')"))
    finally:
        other.close()
        engine.dispose()


def test_retry_locked_retries_only_lock_errors() -> None:
    calls: list[int] = []
    retried: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert db.retry_locked(flaky, timeout_s=5, on_retry=lambda: retried.append(1)) == "ok"
    assert (len(calls), len(retried)) == (3, 2)

    def broken() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: x")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        db.retry_locked(broken, timeout_s=5)
    assert len(calls) == 1


def test_retry_locked_gives_up_at_its_deadline() -> None:
    def locked() -> None:
        raise sqlite3.OperationalError("database is busy")

    with pytest.raises(sqlite3.OperationalError, match="busy"):
        db.retry_locked(locked, timeout_s=0)


def test_is_locked_reads_the_driver_error() -> None:
    assert db.is_locked(sqlite3.OperationalError("database is locked"))
    assert not db.is_locked(sqlite3.OperationalError("disk I/O error"))


def test_update_statements_are_built_once_per_column_set() -> None:
    stmt = db.update_statement("group_state", ("cursor_seq", "seen_seq"), "chat_jid")
    assert stmt is db.update_statement("group_state", ("cursor_seq", "seen_seq"), "chat_jid")
    assert (
        str(stmt)
        == "UPDATE group_state SET cursor_seq = :cursor_seq, seen_seq = :seen_seq WHERE chat_jid = :_key"
    )


def test_one_write_lock_per_database_file(tmp_path: Path) -> None:
    a = db.write_lock(str(tmp_path / "a.db"))
    assert a is db.write_lock(str(tmp_path / "a.db"))
    assert a is not db.write_lock(str(tmp_path / "b.db"))
    with a.held(), a.held():  # re-entrant within a thread
        pass


@pytest.mark.usefixtures("umask_022")
def test_the_database_and_its_wal_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "new" / "app.db"
    engine = db.create_sqlite_engine(path)
    try:
        with db.write_tx(engine) as conn:
            conn.execute(text("CREATE TABLE t (x)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        files = {p.name: file_mode(p) for p in path.parent.iterdir()}
    finally:
        engine.dispose()
    assert {"app.db", "app.db-wal", "app.db-shm"} <= set(files)
    assert {name: mode for name, mode in files.items() if mode != 0o600} == {}
    assert file_mode(path.parent) == 0o700
