from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from microclaw.errors import PermanentStoreError
from microclaw.store.db import ALEMBIC_DIR, create_sqlite_engine, head_revision, migrate
from microclaw.store.models import Base


def test_migrations_produce_exactly_the_models(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    assert migrate(db) == migrate(db)  # idempotent
    engine = create_sqlite_engine(db)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_nanoclaw_tables_keep_their_columns(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    migrate(db)
    con = sqlite3.connect(db)
    cols = {
        t: [r[1] for r in con.execute(f"PRAGMA table_info({t})")] for t in ("messages", "registered_groups")
    }
    assert cols["messages"][:11] == [
        "id",
        "chat_jid",
        "sender",
        "sender_name",
        "content",
        "timestamp",
        "is_from_me",
        "is_bot_message",
        "reply_to_message_id",
        "reply_to_message_content",
        "reply_to_sender_name",
    ]
    assert cols["registered_groups"] == [
        "jid",
        "name",
        "folder",
        "trigger_pattern",
        "added_at",
        "container_config",
        "requires_trigger",
        "is_main",
    ]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_failing_migration_stops_with_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE chats (jid TEXT)")  # a conflicting table from something else
    con.commit()
    con.close()
    with pytest.raises(PermanentStoreError, match=r"migration of .* failed: .*chats"):
        migrate(db)
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert tables == {"chats"}  # the upgrade is one transaction: nothing half-done is left


def _migrate_pausing_between_steps(db: str, between: Any, done: Any, results: Any) -> None:
    """Migrate ``db``; before Alembic's second per-step transaction, let the other process go
    (``between``) and wait for it to finish (``done``, at most 2 s)."""
    from alembic.runtime.migration import MigrationContext as Context

    begin, steps = Context.begin_transaction, []

    def paused_begin(self: Context, _per_migration: bool = False) -> object:
        if _per_migration:
            steps.append(1)
            if len(steps) == 2:
                between.set()
                done.wait(2.0)
        return begin(self, _per_migration)

    Context.begin_transaction = paused_begin  # type: ignore[method-assign]
    results.put(_outcome(db))


def _migrate_when_told(db: str, between: Any, done: Any, results: Any) -> None:
    between.wait(60)
    results.put(_outcome(db))
    done.set()


def _outcome(db: str) -> str:
    try:
        return migrate(db)
    except PermanentStoreError as exc:
        return f"failed: {exc}"


def test_processes_migrating_a_fresh_database_at_once_all_reach_head(tmp_path: Path) -> None:
    """Every process migrates at boot, so on a new install they all start together. Alembic runs
    SQLite migrations one transaction per step by default: a process that read the version
    between another's steps re-ran a step and died on "table ... already exists" (seen in CI:
    the host stopped and took the Procfile stack down). The upgrade must be one transaction."""
    import multiprocessing

    db = str(tmp_path / "fresh.db")
    ctx = multiprocessing.get_context("fork")  # nothing is open in this process yet
    between, done, results = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_migrate_pausing_between_steps, args=(db, between, done, results)),
        ctx.Process(target=_migrate_when_told, args=(db, between, done, results)),
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(10)
    assert not any(o.startswith("failed") for o in outcomes), outcomes
    assert len(set(outcomes)) == 1
    engine = create_sqlite_engine(db)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_the_head_read_from_the_scripts_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_a_database_at_head_boots_without_loading_alembic(tmp_path: Path) -> None:
    """Every role migrates at start; one already at head must not pay for importing Alembic."""
    import subprocess
    import sys

    db = tmp_path / "app.db"
    head = migrate(db)
    probe = (
        "import sys; from microclaw.store.db import migrate; "
        f"print(migrate({str(db)!r}), 'alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [head, "False"]

    from alembic.config import Config

    from alembic import command

    cfg = Config()  # one step back: Alembic runs and brings it to head again
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    engine = create_sqlite_engine(db)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
    engine.dispose()
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [head, "True"]
    engine = create_sqlite_engine(db)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
