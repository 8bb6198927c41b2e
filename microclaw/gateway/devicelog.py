"""The durable per-device log of host -> device events, in its own SQLite file.

Each device's events carry a contiguous sequence number (1, 2, 3, ...) so a device that says
``last_seen_seq = n`` is sent exactly the events after ``n``, with no gap and no duplicate.
Appends are idempotent by key (the outbox's idempotency key), so a reply whose delivery is
retried after a crash is logged once. Writes use ``synchronous=FULL``: an append that returned
survives a crash of any process, and only then does the `device` connector report it sent.

The file (``<data_dir>/device-log.db``, 0600) is shared by the outbound worker (the `device`
connector appends) and the gateway (reads, replays, streams); it is the "platform" the device
connector talks to, like the local channel's mailbox, not app-database state. The global row
id lets the gateway find new events for every device with one indexed query.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microclaw.private import private_sqlite
from microclaw.sqlite import ThreadConnections

LOG_FILE = "device-log.db"


@dataclass(frozen=True)
class DeviceEvent:
    id: int  # global, increasing across devices
    device_id: str
    seq: int  # per device, contiguous from 1
    kind: str
    body: dict[str, Any]
    created_at_ms: int


def _configure(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")


class DeviceLog:
    """Append, page and watch device events."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = path
        private_sqlite(path)
        self._connections = ThreadConnections(path, timeout_s=busy_timeout_s, configure=_configure)
        db = self._connections.get()
        db.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " device_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL,"
            " idempotency_key TEXT NOT NULL UNIQUE, created_at_ms INTEGER NOT NULL,"
            " UNIQUE (device_id, seq))"
        )

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> DeviceLog:
        return cls(data_dir / LOG_FILE)

    def append(self, device_id: str, kind: str, body: dict[str, Any], *, idempotency_key: str) -> int:
        """Log one event for ``device_id`` unless ``idempotency_key`` is already logged; its seq."""
        db = self._connections.get()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT seq FROM events WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
            if row is None:
                (last,) = db.execute(
                    "SELECT coalesce(max(seq), 0) FROM events WHERE device_id = ?", (device_id,)
                ).fetchone()
                seq = int(last) + 1
                db.execute(
                    "INSERT INTO events (device_id, seq, kind, body, idempotency_key, created_at_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (device_id, seq, kind, json.dumps(body), idempotency_key, int(time.time() * 1000)),
                )
            else:
                seq = int(row[0])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return seq

    def after(self, device_id: str, after_seq: int, *, limit: int = 200) -> list[DeviceEvent]:
        """Events of ``device_id`` with seq > ``after_seq``, oldest first."""
        rows = (
            self._connections.get()
            .execute(
                "SELECT id, device_id, seq, kind, body, created_at_ms FROM events"
                " WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (device_id, after_seq, limit),
            )
            .fetchall()
        )
        return [DeviceEvent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def last_seq(self, device_id: str) -> int:
        (value,) = (
            self._connections.get()
            .execute("SELECT coalesce(max(seq), 0) FROM events WHERE device_id = ?", (device_id,))
            .fetchone()
        )
        return int(value)

    def newest_id(self) -> int:
        (value,) = self._connections.get().execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
        return int(value)

    def devices_since(self, after_id: int) -> tuple[int, set[str]]:
        """``(newest id, devices with events past after_id)``: the gateway's watch query."""
        rows = (
            self._connections.get()
            .execute("SELECT max(id), device_id FROM events WHERE id > ? GROUP BY device_id", (after_id,))
            .fetchall()
        )
        if not rows:
            return after_id, set()
        return max(int(r[0]) for r in rows), {str(r[1]) for r in rows}

    def close(self) -> None:
        self._connections.close()
