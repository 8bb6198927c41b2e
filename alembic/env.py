"""Alembic environment: runs migrations on a connection handed in by `microclaw.store.db.migrate`,
or on the database named by ``-x db=PATH`` when alembic is run by hand."""

from __future__ import annotations

from sqlalchemy import Connection

from alembic import context
from microclaw.store.db import create_sqlite_engine
from microclaw.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things in place; batch mode copies tables.
    # transactional_ddl: SQLite's DDL is transactional, but Alembic assumes not and commits after
    # every step. Every process migrates at boot; one that read the version between another's
    # steps re-ran a step ("table already exists") and stopped. As one BEGIN IMMEDIATE
    # transaction the version is read under the write lock and a failed upgrade leaves the
    # database untouched.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    db = context.get_x_argument(as_dictionary=True).get("db", "data/microclaw.db")
    engine = create_sqlite_engine(db)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database file")
run_migrations_online()
