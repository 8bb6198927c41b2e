"""The per-device event log: contiguous seqs per device, idempotent appends, paging."""

from __future__ import annotations

import stat
from pathlib import Path

from microclaw.gateway.devicelog import DeviceLog


def test_seqs_are_contiguous_per_device_and_appends_idempotent(tmp_path: Path, umask_022: None) -> None:
    log = DeviceLog(tmp_path / "log.db")
    assert stat.S_IMODE((tmp_path / "log.db").stat().st_mode) == 0o600
    assert log.append("a", "message", {"text": "1"}, idempotency_key="k1") == 1
    assert log.append("b", "message", {"text": "x"}, idempotency_key="k2") == 1
    assert log.append("a", "message", {"text": "2"}, idempotency_key="k3") == 2
    assert log.append("a", "message", {"text": "again"}, idempotency_key="k1") == 1
    assert [(e.seq, e.body["text"]) for e in log.after("a", 0)] == [(1, "1"), (2, "2")]
    assert [e.seq for e in log.after("a", 1)] == [2]
    assert log.last_seq("a") == 2 and log.last_seq("nobody") == 0


def test_the_watch_query_names_devices_with_new_events(tmp_path: Path) -> None:
    log = DeviceLog(tmp_path / "log.db")
    start = log.newest_id()
    log.append("a", "message", {}, idempotency_key="1")
    log.append("b", "message", {}, idempotency_key="2")
    newest, devices = log.devices_since(start)
    assert devices == {"a", "b"} and newest == log.newest_id()
    assert log.devices_since(newest) == (newest, set())


def test_a_second_handle_sees_the_same_log(tmp_path: Path) -> None:
    DeviceLog(tmp_path / "log.db").append("a", "message", {"text": "hi"}, idempotency_key="k")
    assert DeviceLog(tmp_path / "log.db").after("a", 0)[0].body == {"text": "hi"}
