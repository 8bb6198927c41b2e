"""store.tasks: scheduled tasks and run logs (NanoClaw's CRUD plus the scheduler's queries)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from microclaw.store import tasks
from microclaw.store.db import read_tx, write_tx


def add(engine: Engine, task_id: str, next_run: str | None, *, status: str = "active", **kw) -> tasks.Task:
    with write_tx(engine) as conn:
        return tasks.create_task(
            conn,
            id=task_id,
            group_folder=kw.pop("group_folder", "g"),
            chat_jid="fake:g",
            prompt="p",
            schedule_type="interval",
            schedule_value="60000",
            next_run=next_run,
            status=status,
            created_at=kw.pop("created_at", f"2026-01-01T00:00:0{len(task_id)}.000Z"),
            **kw,
        )


def test_create_applies_nanoclaws_defaults(engine: Engine) -> None:
    task = add(engine, "t1", None, context_mode="weird", script="")
    assert (task.context_mode, task.script, task.status, task.last_run) == ("isolated", None, "active", None)
    assert add(engine, "t2", None, context_mode="group").context_mode == "group"


def test_update_is_partial_and_guarded(engine: Engine) -> None:
    add(engine, "t1", None, script="echo")
    with write_tx(engine) as conn:
        assert not tasks.update_task(conn, "t1")  # an empty patch changes nothing
        assert tasks.update_task(conn, "t1", prompt="new", script="")
        assert not tasks.update_task(conn, "nope", prompt="x")
        with pytest.raises(ValueError, match="last_run"):
            tasks.update_task(conn, "t1", last_run="x")
        task = tasks.get_task(conn, "t1")
    assert task is not None and (task.prompt, task.script) == ("new", None)


def test_delete_removes_the_run_logs_first(engine: Engine) -> None:
    add(engine, "t1", None)
    with write_tx(engine) as conn:
        tasks.log_task_run(conn, task_id="t1", run_at="2026-01-01T00:00:00Z", duration_ms=1, status="success")
        assert tasks.delete_task(conn, "t1")
        assert not tasks.delete_task(conn, "t1")
        assert tasks.task_run_logs(conn, "t1") == [] and tasks.get_task(conn, "t1") is None


def test_run_logs_are_validated_and_listed_oldest_first(engine: Engine) -> None:
    add(engine, "t1", None)
    with write_tx(engine) as conn:
        later = tasks.log_task_run(
            conn, task_id="t1", run_at="2026-01-02", duration_ms=5, status="error", error="x"
        )
        earlier = tasks.log_task_run(conn, task_id="t1", run_at="2026-01-01", duration_ms=3, status="success")
        with pytest.raises(ValueError, match="success"):
            tasks.log_task_run(conn, task_id="t1", run_at="2026-01-03", duration_ms=1, status="done")
        logs = tasks.task_run_logs(conn, "t1")
    assert [log.id for log in logs] == [earlier, later]
    assert logs[1] == tasks.TaskRun(later, "t1", "2026-01-02", 5, "error", None, "x")


def test_lists_are_newest_created_first(engine: Engine) -> None:
    add(engine, "a", None, created_at="2026-01-01")
    add(engine, "b", None, created_at="2026-01-03", group_folder="other")
    add(engine, "c", None, created_at="2026-01-02")
    with read_tx(engine) as conn:
        assert [t.id for t in tasks.get_all_tasks(conn)] == ["b", "c", "a"]
        assert [t.id for t in tasks.get_tasks_for_group(conn, "g")] == ["c", "a"]


def test_due_tasks_are_active_with_a_next_run_at_or_before_now(engine: Engine) -> None:
    add(engine, "late", "2026-03-01T11:00:00.000Z")
    add(engine, "now", "2026-03-01T12:00:00.000Z")
    add(engine, "latest", "2026-03-01T10:00:00.000Z")
    add(engine, "future", "2026-03-01T12:00:00.001Z")
    add(engine, "paused", "2026-03-01T09:00:00.000Z", status="paused")
    add(engine, "done", None)
    with read_tx(engine) as conn:
        assert [t.id for t in tasks.due_tasks(conn, "2026-03-01T12:00:00.000Z")] == ["latest", "late", "now"]
        assert tasks.has_due(conn, "2026-03-01T12:00:00.000Z")
        assert not tasks.has_due(conn, "2026-03-01T09:59:59.999Z")  # the paused one does not count


def test_next_scheduled_is_soonest_first_and_limited(engine: Engine) -> None:
    for i in range(4):
        add(engine, f"t{i}", f"2026-03-0{4 - i}T00:00:00.000Z")
    add(engine, "paused", "2026-03-01T00:00:00.000Z", status="paused")
    with read_tx(engine) as conn:
        assert [t.id for t in tasks.next_scheduled(conn, limit=3)] == ["t3", "t2", "t1"]


def test_record_outcome_sets_the_last_run_and_only_next_run_or_status(engine: Engine) -> None:
    add(engine, "t1", "2026-03-01T00:00:00.000Z")
    with write_tx(engine) as conn:
        assert tasks.record_outcome(conn, "t1", last_run="R", last_result="ok", status="completed")
        assert not tasks.record_outcome(conn, "gone", last_run="R", last_result=None)
        with pytest.raises(ValueError, match="prompt"):
            tasks.record_outcome(conn, "t1", last_run="R", last_result=None, prompt="x")
        task = tasks.get_task(conn, "t1")
    assert task is not None
    assert (task.last_run, task.last_result, task.status, task.next_run) == (
        "R",
        "ok",
        "completed",
        "2026-03-01T00:00:00.000Z",
    )
