"""microclaw/private.py: private data files and the HTTP token, under the common umask 022."""

from __future__ import annotations

from pathlib import Path

import pytest

from microclaw.private import (
    load_or_create_token,
    open_private_append,
    private_dir,
    private_file,
    private_sqlite,
    read_token,
    write_private,
)
from tests.conftest import file_mode

pytestmark = pytest.mark.usefixtures("umask_022")


def test_directories_are_created_0700_and_existing_ones_narrowed(tmp_path: Path) -> None:
    assert file_mode(private_dir(tmp_path / "a" / "data")) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    private_dir(loose)
    assert file_mode(loose) == 0o700


def test_files_are_created_0600_and_existing_ones_narrowed(tmp_path: Path) -> None:
    new = private_file(tmp_path / "new" / "f")
    assert file_mode(new) == 0o600 and file_mode(new.parent) == 0o700
    old = tmp_path / "old"
    old.write_text("kept")
    assert file_mode(old) == 0o644
    private_file(old)
    assert (file_mode(old), old.read_text()) == (0o600, "kept")
    write_private(tmp_path / "pid", "123")
    assert file_mode(tmp_path / "pid") == 0o600 and (tmp_path / "pid").read_text() == "123"
    with open_private_append(tmp_path / "log") as log:
        log.write("one\n")
    with open_private_append(tmp_path / "log") as log:
        log.write("two\n")
    assert file_mode(tmp_path / "log") == 0o600 and (tmp_path / "log").read_text() == "one\ntwo\n"


def test_sqlite_files_and_their_side_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"x.db{suffix}").write_bytes(b"")  # left readable by an older version
    private_sqlite(db)
    assert {p.name: file_mode(p) for p in tmp_path.iterdir()} == {
        "x.db": 0o600,
        "x.db-wal": 0o600,
        "x.db-shm": 0o600,
    }


def test_the_token_is_created_once_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "data" / "http-token"
    assert read_token(path) is None
    token = load_or_create_token(path)
    assert len(token) >= 43 and file_mode(path) == 0o600
    assert load_or_create_token(path) == token == read_token(path)
    assert [p.name for p in path.parent.iterdir()] == ["http-token"]  # no temporary file left
    path.chmod(0o644)
    assert load_or_create_token(path) == token and file_mode(path) == 0o600


def test_a_blank_token_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "http-token"
    path.write_text("\n")
    assert read_token(path) is None
    token = load_or_create_token(path)
    assert read_token(path) == token and file_mode(path) == 0o600


def test_making_an_open_database_private_keeps_the_locks_sqlite_holds_on_it(tmp_path: Path) -> None:
    # Closing any descriptor of a file drops every POSIX lock this process holds on it. In WAL
    # mode a connection's shared lock on the database file is what stops another process, when
    # it closes the last connection it knows of, from checkpointing and deleting the WAL under
    # this one (its later writes would then be invisible to everyone else).
    import sqlite3
    import subprocess
    import sys

    path = tmp_path / "app.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x)")
    private_sqlite(path)
    other = (
        "import sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('INSERT INTO t VALUES (1)')\n"
        "db.close()\n"
    )
    subprocess.run([sys.executable, "-c", other, str(path)], check=True, timeout=30)
    try:
        assert (tmp_path / "app.db-wal").exists()  # the other process knew it was not the last
        assert holder.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    finally:
        holder.close()
