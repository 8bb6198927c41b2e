"""store.status: connector, component, heartbeat and beat rows, on a real SQLite file."""

from __future__ import annotations

from sqlalchemy import Engine

from microclaw.store import status
from microclaw.store.db import read_tx, write_tx


def test_connector_rows_keep_detail_and_error_until_replaced(engine: Engine) -> None:
    with write_tx(engine) as conn:
        status.record_connector(conn, "telegram", "active", detail="listening", now=10)
        status.record_connector(conn, "telegram", "error", error="Boom: down", now=20)
        status.record_connector(conn, "discord", "skipped", detail="no token", now=30)
    with read_tx(engine) as conn:
        rows = status.connectors(conn)
    assert [r.name for r in rows] == ["discord", "telegram"]  # by name
    assert rows[1] == status.ConnectorRow("telegram", "error", "listening", "Boom: down", None, 20)


def test_a_connector_event_stamps_its_last_event(engine: Engine) -> None:
    with write_tx(engine) as conn:
        status.record_connector(conn, "fake", "active", now=10)
        status.record_connector(conn, "fake", "active", event=True, now=25)
        status.record_connector(conn, "fake", "stopped", now=40)
    with read_tx(engine) as conn:
        (row,) = status.connectors(conn)
    assert (row.state, row.last_event_at_ms, row.updated_at_ms) == ("stopped", 25, 40)


def test_component_detail_round_trips_as_json(engine: Engine) -> None:
    with write_tx(engine) as conn:
        assert status.component(conn, "sandbox") is None
        status.record_component(conn, "sandbox", "ready", {"backend": "docker", "reason": None}, now=5)
        status.record_component(conn, "sandbox", "unavailable", {"reason": "no engine", "pid": 12}, now=9)
    with read_tx(engine) as conn:
        row = status.component(conn, "sandbox")
    assert row == status.ComponentRow("sandbox", "unavailable", {"reason": "no engine", "pid": 12}, 9)


def test_heartbeats_are_upserted_listed_by_role_and_pruned(engine: Engine) -> None:
    with write_tx(engine) as conn:
        status.record_heartbeat(conn, "w@h:1", role="microclaw.router", pid=1, started_at_ms=1, now=100)
        status.record_heartbeat(conn, "b@h:2", role="beat", pid=2, started_at_ms=2, now=50)
        status.record_heartbeat(conn, "w@h:1", role="microclaw.router", pid=1, started_at_ms=1, now=300)
    with read_tx(engine) as conn:
        rows = status.heartbeats(conn)
    assert [(r.role, r.last_seen_ms) for r in rows] == [("beat", 50), ("microclaw.router", 300)]
    with write_tx(engine) as conn:
        assert status.prune_heartbeats(conn, seen_before_ms=100) == 1
        assert [r.name for r in status.heartbeats(conn)] == ["w@h:1"]


def test_beat_entries_are_upserted(engine: Engine) -> None:
    with write_tx(engine) as conn:
        assert status.beat_entries(conn) == {}
        status.record_beat_entry(conn, "sweeper", last_run_at=1.5, total_run_count=1)
        status.record_beat_entry(conn, "sweeper", last_run_at=2.5, total_run_count=2)
        status.record_beat_entry(conn, "cleanup", last_run_at=3.0, total_run_count=7)
    with read_tx(engine) as conn:
        assert status.beat_entries(conn) == {
            "sweeper": status.BeatEntry("sweeper", 2.5, 2),
            "cleanup": status.BeatEntry("cleanup", 3.0, 7),
        }
