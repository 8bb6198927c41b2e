"""microclaw/connectors/state.py: the connector-owned state file behind the email and iMessage
cursors (and email's per-chat reply routes)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from microclaw.connectors.state import ConnectorState
from tests.conftest import file_mode


def test_values_round_trip_and_survive_a_new_instance(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.db"
    state = ConnectorState(path)
    assert state.get("cursor") is None and state.get("cursor", 0) == 0
    state.put("cursor", {"uidvalidity": 1, "uid": 42, "since": "2025-01-07T00:00:00+00:00"})
    state.put_many({"chat:a": {"to": ["a@x.y"]}, "chat:b": None, "n": 3})
    state.close()
    again = ConnectorState(path)
    assert again.get("cursor")["uid"] == 42
    assert again.get("chat:a") == {"to": ["a@x.y"]} and again.get("n") == 3
    assert again.get("chat:b", "default") is None  # a stored null is a value
    again.delete("n")
    assert again.get("n") is None


def test_prune_deletes_only_old_keys_with_the_prefix(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    state = ConnectorState(tmp_path / "s.db", clock=lambda: now[0])
    state.put_many({"sent:old": 1, "keep:old": 1})
    cutoff = int(now[0] * 1000) + 1
    now[0] += 0.005
    state.put("sent:new", 2)
    assert state.prune("sent:", cutoff) == 1
    assert state.get("sent:old") is None and state.get("sent:new") == 2 and state.get("keep:old") == 1


def _writer(path: str, start: int) -> None:
    state = ConnectorState(Path(path))
    for i in range(start, start + 50):
        state.put(f"k{i}", i)


def test_two_processes_write_the_same_file(tmp_path: Path) -> None:
    """The host (cursor) and the outbound worker (reply routes) share one file."""
    path = tmp_path / "shared.db"
    ConnectorState(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), n * 100)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    state = ConnectorState(path)
    assert all(state.get(f"k{i}") == i for i in (*range(50), *range(100, 150)))


def test_the_state_file_and_its_wal_files_are_private_whatever_the_umask(
    tmp_path: Path, umask_022: None
) -> None:
    state = ConnectorState(tmp_path / "email-state.db")
    state.put("cursor", 1)
    modes = {p.name: file_mode(p) for p in tmp_path.iterdir()}
    state.close()
    assert set(modes) >= {"email-state.db", "email-state.db-wal", "email-state.db-shm"}
    assert set(modes.values()) == {0o600}
