"""A data dir whose path holds "@" or "%" works: the database migrates and the broker URL round-trips."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect

from microclaw.broker.transport import sqlite_path
from microclaw.config import load_settings
from microclaw.store.db import create_sqlite_engine, migrate


def test_migrate_in_a_directory_with_at_and_percent(tmp_path: Path) -> None:
    db = tmp_path / "me@host %40 50%" / "microclaw.db"
    db.parent.mkdir()
    assert migrate(db)  # ConfigParser interpolation of the URL-quoted "%40" used to stop it
    engine = create_sqlite_engine(db)
    try:
        assert "messages" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_the_default_broker_url_names_the_odd_data_dir(isolated_env, monkeypatch, tmp_path: Path) -> None:
    data = tmp_path / "a@b%c" / "data"
    monkeypatch.setenv("MICROCLAW_DATA_DIR", str(data))
    settings = load_settings()
    assert sqlite_path(settings.broker.url) == data / "broker.db"
