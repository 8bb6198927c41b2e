from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from microclaw.errors import PermanentStoreError
from microclaw.store.db import create_sqlite_engine, migrate
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
