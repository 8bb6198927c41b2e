"""scheduler.completion: what a task run leaves on its task, with the clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from microclaw.scheduler import completion
from microclaw.store import runs, task_queue, tasks
from microclaw.store.db import read_tx, write_tx

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


def started_run(engine: Engine, kind: str, value: str, next_run: str | None, *, status: str = "active"):
    """A task whose claimed run has started: returns (run id, queue entry id)."""
    with write_tx(engine) as conn:
        tasks.create_task(
            conn,
            id="t1",
            group_folder="g",
            chat_jid="fake:g",
            prompt="p",
            schedule_type=kind,
            schedule_value=value,
            next_run=next_run,
            status=status,
        )
        task_queue.claim(conn, task_id="t1", chat_jid="fake:g", scheduled_for="slot", now_ms=1)
        entry = task_queue.start_next(conn, "fake:g")
        assert entry is not None
        run_id = runs.start(conn, "fake:g", "task", lease_token=1, worker="w", task_run_id=entry.id)
    return run_id, entry.id


def finish(
    engine: Engine, run_id: int, entry_id: int, *, text: str | None = "done!", error: str | None = None
):
    with write_tx(engine) as conn:
        completion.finish_task_run(
            conn,
            run_id=run_id,
            entry_id=entry_id,
            task_id="t1",
            text=text,
            error=error,
            duration_ms=1234,
            timezone="UTC",
            now=NOW,
        )


def state(engine: Engine, run_id: int, entry_id: int):
    with read_tx(engine) as conn:
        return (
            tasks.get_task(conn, "t1"),
            tasks.task_run_logs(conn, "t1"),
            runs.get(conn, run_id),
            task_queue.get(conn, entry_id),
        )


def test_a_once_task_completes_and_everything_is_recorded(engine: Engine) -> None:
    run_id, entry_id = started_run(engine, "once", "2026-03-01T12:00:00", None)
    finish(engine, run_id, entry_id)
    task, logs, run, entry = state(engine, run_id, entry_id)
    assert (task.status, task.last_run, task.last_result) == (
        "completed",
        "2026-03-01T12:00:30.000Z",
        "done!",
    )
    assert [(log.status, log.duration_ms, log.result, log.run_at) for log in logs] == [
        ("success", 1234, "done!", "2026-03-01T12:00:30.000Z")
    ]
    assert run.status == "done"
    assert (entry.status, entry.finished_at_ms) == ("done", int(NOW.timestamp() * 1000))


def test_a_recurring_task_skips_the_slots_it_missed(engine: Engine) -> None:
    # Due at 11:57:20 every minute; the run ended at 12:00:30: the next slot is 12:01:20.
    run_id, entry_id = started_run(engine, "interval", "60000", "2026-03-01T11:57:20.000Z")
    finish(engine, run_id, entry_id)
    task, *_ = state(engine, run_id, entry_id)
    assert (task.status, task.next_run) == ("active", "2026-03-01T12:01:20.000Z")


def test_a_next_run_still_ahead_is_left_alone(engine: Engine) -> None:
    run_id, entry_id = started_run(engine, "interval", "60000", "2026-03-01T12:01:00.000Z")
    finish(engine, run_id, entry_id)
    task, *_ = state(engine, run_id, entry_id)
    assert task.next_run == "2026-03-01T12:01:00.000Z"


@pytest.mark.parametrize("status", ["paused", "completed"])
def test_an_inactive_task_keeps_its_status_and_schedule(engine: Engine, status: str) -> None:
    run_id, entry_id = started_run(engine, "once", "2026-03-01T12:00:00", None, status=status)
    finish(engine, run_id, entry_id)
    task, *_ = state(engine, run_id, entry_id)
    assert (task.status, task.last_result) == (status, "done!")


def test_a_failed_run_is_logged_as_an_error_and_not_retried(engine: Engine) -> None:
    run_id, entry_id = started_run(engine, "once", "2026-03-01T12:00:00", None)
    finish(engine, run_id, entry_id, text=None, error="model down")
    task, logs, run, entry = state(engine, run_id, entry_id)
    assert [(log.status, log.error) for log in logs] == [("error", "model down")]
    assert task.last_result.startswith("Error: model down")
    assert (run.status, entry.status, task.status) == ("failed", "done", "completed")


def test_a_run_whose_task_was_gone_closes_only_the_run_and_entry(engine: Engine) -> None:
    run_id, entry_id = started_run(engine, "once", "2026-03-01T12:00:00", None)
    with write_tx(engine) as conn:
        completion.finish_task_run(
            conn,
            run_id=run_id,
            entry_id=entry_id,
            task_id=None,
            text=None,
            error="task no longer exists",
            duration_ms=0,
            timezone="UTC",
            now=NOW,
        )
    task, logs, run, entry = state(engine, run_id, entry_id)
    assert (task.status, task.last_run, logs) == ("active", None, [])
    assert (run.status, entry.status) == ("failed", "done")


def test_an_interrupted_run_is_logged_and_abandoned(engine: Engine) -> None:
    run_id, entry_id = started_run(engine, "interval", "60000", "2026-03-01T11:59:20.000Z")
    with write_tx(engine) as conn:
        completion.settle_interrupted(conn, run_id=run_id, entry_id=entry_id, timezone="UTC", now=NOW)
    task, logs, run, entry = state(engine, run_id, entry_id)
    assert [(log.status, log.error, log.duration_ms) for log in logs] == [
        ("error", completion.INTERRUPTED, 0)
    ]
    assert (run.status, entry.status) == ("abandoned", "done")
    assert task.next_run == "2026-03-01T12:01:20.000Z"
