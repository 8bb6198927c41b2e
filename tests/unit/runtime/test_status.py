"""The sandbox part of microclaw.runtime.status: what the sandbox worker's readiness row turns into."""

from __future__ import annotations

from sqlalchemy import Engine, update

from microclaw.runtime.status import READY_STALE_MS, health_problems, sandbox_status
from microclaw.store.db import now_ms, read_tx, write_tx
from microclaw.store.models import ComponentStatus
from workers.sandbox import record_component


def snapshot(settings, engine: Engine, now: int | None = None) -> dict:
    with read_tx(engine) as conn:
        return sandbox_status(conn, settings, now_ms() if now is None else now)


def test_unknown_until_a_sandbox_worker_reports(settings, engine: Engine) -> None:
    sb = snapshot(settings, engine)
    assert sb["state"] == "unknown" and sb["ready"] is None and "no sandbox worker" in sb["reason"]


def test_ready_and_unavailable_reports(settings, engine: Engine) -> None:
    record_component(engine, "sandbox", "ready", {"backend": "docker", "image": "img", "reason": None})
    sb = snapshot(settings, engine)
    assert (sb["state"], sb["ready"], sb["backend"], sb["image"]) == ("ready", True, "docker", "img")
    record_component(engine, "sandbox", "unavailable", {"backend": "docker", "reason": "engine unreachable"})
    sb = snapshot(settings, engine)
    assert (sb["state"], sb["ready"], sb["reason"]) == ("unavailable", False, "engine unreachable")


def test_a_report_that_stopped_coming_is_stale(settings, engine: Engine) -> None:
    record_component(engine, "sandbox", "ready", {"reason": None})
    later = now_ms() + int(settings.sandbox.readiness_interval_s * 3000) + 60_000
    sb = snapshot(settings, engine, later)
    assert (sb["state"], sb["last_state"], sb["ready"]) == ("stale", "ready", False)
    record_component(engine, "sandbox", "stopped", {"reason": "shut down"})
    t = ComponentStatus.__table__
    with write_tx(engine) as conn:
        conn.execute(update(t).values(updated_at_ms=0))
    assert snapshot(settings, engine)["state"] == "stopped"  # a clean stop never goes stale


def test_an_unavailable_sandbox_does_not_fail_health() -> None:
    status = {
        "connectors": [],
        "workers": [
            {"alive": True, "role": role} for role in ("microclaw.router", "microclaw.outbound", "beat")
        ],
        "sandbox": {"state": "unavailable", "reason": "not macOS"},
    }
    assert health_problems(status) == []


def _live(**extra: object) -> dict:
    return {
        "connectors": [],
        "workers": [
            {"alive": True, "role": role} for role in ("microclaw.router", "microclaw.outbound", "beat")
        ],
        "sandbox": {"state": "ready"},
        **extra,
    }


def test_ready_work_nobody_takes_fails_health_even_with_live_heartbeats() -> None:
    problems = health_problems(_live(queue_waits={"microclaw.router": READY_STALE_MS + 1}))
    assert len(problems) == 1
    assert problems[0].startswith("microclaw.router: ready work has waited")


def test_fresh_work_and_the_sandbox_queue_do_not_fail_health() -> None:
    waits = {"microclaw.router": READY_STALE_MS, "microclaw.sandbox": 10 * READY_STALE_MS}
    assert health_problems(_live(queue_waits=waits)) == []


def test_a_database_locked_by_another_process_is_reported_busy_not_as_dead_roles(settings) -> None:
    from microclaw.runtime.status import collect_status, lock_fault
    from microclaw.runtime.wiring import app_engine, bootstrap_database
    from tests.unit.store.test_db_faults import HOLD_SQLITE, holder, stop

    bootstrap_database(settings)
    engine = app_engine(settings)
    assert lock_fault(settings.store.db_path) is None
    proc = holder(HOLD_SQLITE, settings.store.db_path)
    try:
        snapshot = collect_status(settings, engine)  # reads still work under WAL
    finally:
        stop(proc)
    assert snapshot["workers"] == []  # no heartbeat at all, as when none could be written
    problems = health_problems(snapshot)
    assert any(p.startswith("database busy") for p in problems)
    assert not any(p.startswith("no live") for p in problems)
    assert collect_status(settings, engine)["store_faults"] == []
    assert any(p.startswith("no live") for p in health_problems(collect_status(settings, engine)))
