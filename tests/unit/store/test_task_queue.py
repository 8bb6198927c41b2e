"""store.task_queue: claimed scheduled-task runs, once per (task, slot), on a real SQLite file."""

from __future__ import annotations

from sqlalchemy import Engine

from microclaw.store import task_queue
from microclaw.store.db import read_tx, write_tx


def claim(engine: Engine, task: str, slot: str, chat: str = "fake:g") -> bool:
    with write_tx(engine) as conn:
        return task_queue.claim(conn, task_id=task, chat_jid=chat, scheduled_for=slot, now_ms=100)


def test_a_slot_is_claimed_once(engine: Engine) -> None:
    assert claim(engine, "t1", "09:00")
    assert not claim(engine, "t1", "09:00")  # a second tick, or a second beat: nothing new
    assert claim(engine, "t1", "10:00")
    assert claim(engine, "t2", "09:00")
    with read_tx(engine) as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM task_queue").scalar_one() == 3


def test_entries_are_started_oldest_first_and_only_once(engine: Engine) -> None:
    claim(engine, "t1", "a")
    claim(engine, "t2", "b")
    claim(engine, "t3", "c", chat="fake:other")
    with write_tx(engine) as conn:
        assert task_queue.has_pending(conn, "fake:g")
        first = task_queue.start_next(conn, "fake:g")
        second = task_queue.start_next(conn, "fake:g")
        assert task_queue.start_next(conn, "fake:g") is None
        assert not task_queue.has_pending(conn, "fake:g")
        assert task_queue.has_pending(conn, "fake:other")
    assert first is not None and second is not None
    assert (first.task_id, first.scheduled_for, first.claimed_at_ms) == ("t1", "a", 100)
    assert second.task_id == "t2"
    with read_tx(engine) as conn:
        assert task_queue.get(conn, first.id).status == "running"  # type: ignore[union-attr]


def test_busy_tasks_are_those_pending_or_running(engine: Engine) -> None:
    claim(engine, "t1", "a")
    claim(engine, "t2", "a")
    claim(engine, "t3", "a")
    with write_tx(engine) as conn:
        running = task_queue.start_next(conn, "fake:g")
        assert running is not None
        task_queue.finish(conn, running.id, now_ms=500)
        task_queue.start_next(conn, "fake:g")
        assert task_queue.busy_task_ids(conn) == {"t2", "t3"}


def test_finish_marks_done_with_its_time_and_closes_the_chat(engine: Engine) -> None:
    claim(engine, "t1", "a")
    with write_tx(engine) as conn:
        assert task_queue.chats_with_open(conn) == {"fake:g"}
        entry = task_queue.start_next(conn, "fake:g")
        assert entry is not None
        assert task_queue.chats_with_open(conn) == {"fake:g"}  # running is still open
        task_queue.finish(conn, entry.id, now_ms=900)
        done = task_queue.get(conn, entry.id)
        assert task_queue.chats_with_open(conn) == set()
        assert task_queue.get(conn, entry.id + 1) is None
    assert done is not None and (done.status, done.finished_at_ms) == ("done", 900)
