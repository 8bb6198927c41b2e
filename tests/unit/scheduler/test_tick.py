from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from microclaw.scheduler.schedule import ScheduleLimits
from microclaw.scheduler.tick import BUDGET_SKIPPED, claim_due_tasks, iso, parse_iso
from microclaw.store import audit, usage
from microclaw.store.db import read_tx, write_tx
from microclaw.store.models import ScheduledTask, TaskQueueEntry, TaskRunLog

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


def add_task(
    engine, task_id: str, kind: str, value: str, next_run: datetime | None, status: str = "active"
) -> None:
    with write_tx(engine) as conn:
        conn.execute(
            insert(ScheduledTask.__table__).values(
                id=task_id,
                group_folder="g",
                chat_jid="fake:g",
                prompt="p",
                schedule_type=kind,
                schedule_value=value,
                next_run=iso(next_run) if next_run else None,
                status=status,
                created_at=iso(NOW),
            )
        )


def task(engine, task_id: str):
    with read_tx(engine) as conn:
        return conn.execute(
            select(ScheduledTask.__table__).where(ScheduledTask.__table__.c.id == task_id)
        ).one()


def queued(engine) -> list[tuple[str, str]]:
    t = TaskQueueEntry.__table__
    with read_tx(engine) as conn:
        return [(r.task_id, r.scheduled_for) for r in conn.execute(select(t).order_by(t.c.id))]


def test_due_runs_are_claimed_once_and_schedules_advance(engine) -> None:
    add_task(engine, "every-min", "interval", "60000", NOW - timedelta(minutes=3, seconds=10))
    add_task(engine, "once", "once", "2026-03-01T11:00:00", NOW - timedelta(hours=1))
    add_task(engine, "later", "interval", "60000", NOW + timedelta(minutes=5))
    add_task(engine, "paused", "interval", "60000", NOW - timedelta(minutes=1), status="paused")
    assert claim_due_tasks(engine, timezone="UTC", now=NOW) == ["fake:g"]
    assert [t for t, _ in queued(engine)] == ["once", "every-min"]  # oldest due first
    # Interval keeps its grid and skips missed slots: :20 past, next slot after now is 12:01:20.
    assert task(engine, "every-min").next_run == "2026-03-01T12:01:20.000Z"
    assert task(engine, "once").next_run is None and task(engine, "once").status == "active"
    assert claim_due_tasks(engine, timezone="UTC", now=NOW) == []  # nothing fires twice
    assert len(queued(engine)) == 2


def test_cron_in_the_configured_timezone(engine) -> None:
    add_task(engine, "nine", "cron", "0 9 * * *", NOW - timedelta(seconds=1))
    claim_due_tasks(engine, timezone="Europe/Berlin", now=NOW)
    assert task(engine, "nine").next_run == "2026-03-02T08:00:00.000Z"  # 09:00 CET


def test_broken_schedule_is_paused_with_a_run_log(engine) -> None:
    add_task(engine, "bad", "cron", "not a cron", NOW - timedelta(seconds=1))
    assert claim_due_tasks(engine, timezone="UTC", now=NOW) == []
    assert task(engine, "bad").status == "paused"
    with read_tx(engine) as conn:
        log = conn.execute(select(TaskRunLog.__table__)).one()
    assert log.status == "error" and "schedule invalid" in log.error


# --- hostile rows and limits (security: one task never stops the tick) -------------------------


def audit_kinds(engine) -> list[str]:
    with write_tx(engine) as conn:
        return [r["kind"] for r in audit.recent(conn)]


def test_a_poisoned_task_is_paused_and_the_good_ones_still_fire(engine) -> None:
    # ~10,000 years: the interval parses, but the slot after 2026 is past the year 9999.
    add_task(engine, "overflow", "interval", "315537897600000", NOW - timedelta(minutes=1))
    add_task(engine, "good", "interval", "60000", NOW - timedelta(seconds=5))
    with write_tx(engine) as conn:  # a stored time that sorts as due but is not a time at all
        conn.execute(
            insert(ScheduledTask.__table__).values(
                id="garbage", group_folder="g", chat_jid="fake:g", prompt="p", schedule_type="interval",
                schedule_value="60000", next_run="0000-bogus", status="active", created_at=iso(NOW),
            )
        )  # fmt: skip
    assert claim_due_tasks(engine, timezone="UTC", now=NOW) == ["fake:g"]
    assert [t for t, _ in queued(engine)] == ["good"]
    for bad in ("overflow", "garbage"):
        assert task(engine, bad).status == "paused"
    with read_tx(engine) as conn:
        logs = {r.task_id: r.error for r in conn.execute(select(TaskRunLog.__table__))}
    assert "past the year 9999" in logs["overflow"] and "schedule invalid" in logs["garbage"]
    assert audit_kinds(engine).count("scheduler.paused") == 2
    # The next tick is clean: the paused tasks are no longer due ("good" still has its run queued).
    assert claim_due_tasks(engine, timezone="UTC", now=NOW + timedelta(minutes=2)) == []


def test_a_too_frequent_stored_schedule_runs_at_most_every_min_interval(engine) -> None:
    add_task(engine, "spam", "interval", "1000", NOW - timedelta(milliseconds=500))
    add_task(engine, "cron-secs", "cron", "* * * * * *", NOW - timedelta(milliseconds=500))
    claim_due_tasks(
        engine, timezone="UTC", now=NOW, limits=ScheduleLimits(min_interval=timedelta(seconds=60))
    )
    slot = NOW - timedelta(milliseconds=500)
    for tid in ("spam", "cron-secs"):
        assert parse_iso(task(engine, tid).next_run) >= slot + timedelta(seconds=60) - timedelta(
            milliseconds=1
        )


def test_a_group_over_its_daily_budget_gets_no_scheduled_runs(engine) -> None:
    add_task(engine, "daily", "interval", "3600000", NOW - timedelta(seconds=1))
    add_task(engine, "once", "once", "2026-03-01T12:00:00", NOW - timedelta(seconds=30))
    with write_tx(engine) as conn:
        usage.record(
            conn, run_id=None, chat_jid="fake:g", group_folder="g", model="m", steps=1,
            input_tokens=900, output_tokens=200, cost=0.0, day=usage.utc_day(NOW),
        )  # fmt: skip
    limits = ScheduleLimits(daily_token_budget=1000)
    assert claim_due_tasks(engine, timezone="UTC", now=NOW, limits=limits) == []
    assert queued(engine) == []
    assert task(engine, "daily").next_run == "2026-03-01T13:00:29.000Z"  # the slot is skipped
    assert task(engine, "once").next_run == "2026-03-02T00:00:00.000Z"  # waits for the reset
    assert task(engine, "once").status == "active"
    with read_tx(engine) as conn:
        errors = [r.error for r in conn.execute(select(TaskRunLog.__table__))]
    assert errors == [BUDGET_SKIPPED, BUDGET_SKIPPED]
    assert audit_kinds(engine).count("scheduler.budget_skipped") == 2
    # Under budget (a bigger one), the same tasks are claimed as usual.
    claim_due_tasks(
        engine, timezone="UTC", now=NOW + timedelta(days=1), limits=ScheduleLimits(daily_token_budget=5000)
    )
    assert {t for t, _ in queued(engine)} == {"daily", "once"}
