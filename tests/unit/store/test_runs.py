"""store.runs: the one owner of the runs table, on a real SQLite file."""

from __future__ import annotations

from sqlalchemy import Engine

from microclaw.store import runs, task_queue, tasks
from microclaw.store.db import read_tx, write_tx


def start(engine: Engine, chat: str = "fake:g", **values) -> int:
    with write_tx(engine) as conn:
        return runs.start(conn, chat, values.pop("kind", "messages"), lease_token=7, worker="w1", **values)


def test_a_started_run_is_running_with_what_it_consumed(engine: Engine) -> None:
    run_id = start(engine, prev_cursor_seq=3, prev_seen_seq=4, to_seq=9, message_count=2, now=1_700_000_000.5)
    with read_tx(engine) as conn:
        run = runs.get(conn, run_id)
        started_ms = conn.exec_driver_sql("SELECT started_at_ms FROM runs").scalar_one()
    assert run == runs.RunRow(run_id, "fake:g", "messages", None, 7, 3, 4, 9, 2, "running", "w1")
    assert started_ms == 1_700_000_000_500


def test_ids_grow_and_unknown_ids_read_as_none(engine: Engine) -> None:
    first, second = start(engine), start(engine)
    assert second > first
    with read_tx(engine) as conn:
        assert runs.get(conn, second + 1) is None
        assert runs.to_seq(conn, second + 1) is None
        assert runs.lease_of(conn, second + 1) is None


def test_finish_records_status_error_and_time(engine: Engine) -> None:
    run_id = start(engine)
    with write_tx(engine) as conn:
        runs.finish(conn, run_id, "failed", "model down", now=42.25)
    with read_tx(engine) as conn:
        row = conn.exec_driver_sql("SELECT status, error, finished_at FROM runs").one()
    assert tuple(row) == ("failed", "model down", 42.25)


def test_running_queries_see_only_unfinished_runs(engine: Engine) -> None:
    a1, a2 = start(engine, "fake:a"), start(engine, "fake:a")
    b = start(engine, "fake:b")
    with write_tx(engine) as conn:
        runs.finish(conn, b, "done")
    with read_tx(engine) as conn:
        assert [r.id for r in runs.running(conn, "fake:a")] == [a1, a2]  # oldest first
        assert runs.running(conn, "fake:b") == []
        assert runs.has_running(conn, "fake:a") and not runs.has_running(conn, "fake:b")
        assert runs.chats_with_running(conn) == {"fake:a"}
        assert runs.count_running(conn) == 2


def test_extend_moves_to_seq_of_a_running_run_only(engine: Engine) -> None:
    run_id = start(engine, to_seq=5, message_count=1)
    with write_tx(engine) as conn:
        assert runs.extend(conn, run_id, to_seq=8, added=3)
        assert runs.to_seq(conn, run_id) == 8
        assert runs.get(conn, run_id).message_count == 4  # type: ignore[union-attr]
        runs.finish(conn, run_id, "done")
        assert not runs.extend(conn, run_id, to_seq=12, added=1)  # a finished run takes nothing more
        assert runs.to_seq(conn, run_id) == 8


def test_lease_of_names_the_chat_and_token_to_fence_with(engine: Engine) -> None:
    run_id = start(engine, "fake:x")
    with read_tx(engine) as conn:
        assert runs.lease_of(conn, run_id) == ("fake:x", 7)


def test_task_context_mode_follows_the_run_to_its_task(engine: Engine) -> None:
    with write_tx(engine) as conn:
        tasks.create_task(
            conn,
            id="t1",
            group_folder="g",
            chat_jid="fake:g",
            prompt="p",
            schedule_type="once",
            schedule_value="2026-01-01T00:00:00",
            next_run=None,
            context_mode="group",
        )
        task_queue.claim(conn, task_id="t1", chat_jid="fake:g", scheduled_for="slot", now_ms=1)
        entry = task_queue.start_next(conn, "fake:g")
        assert entry is not None
    task_run = start(engine, kind="task", task_run_id=entry.id)
    message_run = start(engine)
    with read_tx(engine) as conn:
        assert runs.task_context_mode(conn, task_run) == "group"
        assert runs.task_context_mode(conn, message_run) is None
