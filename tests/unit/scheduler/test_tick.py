from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from microclaw.scheduler.tick import claim_due_tasks, iso
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
