"""A broker file that is corrupt or deleted under running users: moved aside, recreated,
reported once through `on_reset`, and usable again; the first operation after the fault
raises `BrokerFileReset` (a connection error to kombu, so Celery reconnects)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from microclaw.broker import store
from microclaw.broker.store import BrokerFile, BrokerFileReset

from .conftest import connect


@pytest.fixture
def resets() -> Iterator[list[tuple[Path, Path | None, str]]]:
    seen: list[tuple[Path, Path | None, str]] = []
    store.on_reset(lambda path, moved, reason: seen.append((path, moved, reason)))
    yield seen
    store.on_reset(None)


def due_for_check(broker: BrokerFile) -> None:
    broker._local.next_check = 0.0  # the once-a-second check, now rather than after a sleep


def corrupt_header(path: Path) -> None:
    """Overwrite the header bytes once the WAL holds no copy of page 1 (a checkpoint would
    write the good page back: that case heals itself)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with open(path, "r+b") as f:
        f.write(b"this is no longer a SQLite file!" * 4)


def test_a_corrupted_header_is_moved_aside_and_a_fresh_file_works(broker_path: Path, resets) -> None:
    broker = BrokerFile(broker_path)
    broker.put("q", "before")
    corrupt_header(broker_path)
    due_for_check(broker)
    with pytest.raises(BrokerFileReset, match="corrupt"):
        broker.put("q", "during")
    [(path, moved, reason)] = resets
    assert path == broker_path and moved is not None and moved.exists() and "corrupt" in reason
    assert moved.name.startswith("broker.db.corrupt-")
    broker.put("q", "after")  # a fresh file
    assert broker.claim("q", None)[1] == "after"
    assert oct(broker_path.stat().st_mode & 0o777) == "0o600"


def test_a_corrupt_file_found_at_open_is_moved_aside(broker_path: Path, resets) -> None:
    broker_path.write_bytes(b"garbage" * 1000)
    os.chmod(broker_path, 0o600)
    broker = BrokerFile(broker_path)
    with pytest.raises(BrokerFileReset):
        broker.put("q", "x")
    assert len(resets) == 1 and resets[0][1] is not None
    broker.put("q", "x")
    assert broker.size("q") == 1


def test_a_deleted_file_is_recreated_and_reported_once(broker_path: Path, resets) -> None:
    one, two = BrokerFile(broker_path), BrokerFile(broker_path)
    one.put("q", "lost with the file")
    two.size("q")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{broker_path}{suffix}").unlink(missing_ok=True)
    due_for_check(one)
    due_for_check(two)
    with pytest.raises(BrokerFileReset, match="deleted"):
        one.put("q", "x")
    with pytest.raises(BrokerFileReset):  # the other user notices too, but finds it recreated
        two.size("q")
    assert len(resets) == 1 and resets[0][1] is None
    one.put("q", "new")
    assert two.size("q") == 1  # both on the same fresh file


def test_a_kombu_consumer_reconnects_to_the_fresh_file(broker_path: Path, resets) -> None:
    with connect(broker_path) as conn:
        queue = conn.SimpleQueue("work")
        queue.put({"n": 1})
        got = queue.get(timeout=5)
        assert got.payload == {"n": 1}
        got.ack()
        corrupt_header(broker_path)
        due_for_check(conn.default_channel.broker)
        with pytest.raises(conn.connection_errors):
            queue.put({"n": 2})
    with connect(broker_path) as conn:  # what Celery does on a connection error
        queue = conn.SimpleQueue("work")
        queue.put({"n": 3})
        assert queue.get(timeout=5).payload == {"n": 3}
    assert len(resets) == 1
