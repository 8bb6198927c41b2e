"""Beat's database scheduler driven by an injected wall clock: steps of an hour either way
silence no entry, fire no scheduled slot twice, and the tick entry sleeps until the next due
task instead of polling every second."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from microclaw.runtime import queues
from microclaw.runtime.celery_app import create_app
from microclaw.scheduler.tick import claim_due_tasks
from microclaw.store import status, task_queue
from microclaw.store.db import create_sqlite_engine, read_tx
from tests.unit.scheduler.test_tick import add_task
from workers.beat import MAX_IDLE_S, DatabaseScheduler

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class Recording(DatabaseScheduler):
    """The real scheduler; only publishing is recorded instead of sent (no worker listens)."""

    fired: Counter[str]

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        self.fired[entry.name] += 1
        return None


@pytest.fixture
def beat(settings, monkeypatch):
    def make(clock: Clock) -> Recording:
        app = create_app(settings)
        monkeypatch.setattr(app, "now", clock)
        scheduler = Recording(app=app, lazy=True)
        scheduler.fired = Counter()
        scheduler.setup_schedule()
        return scheduler

    return make


def run_for(scheduler: Recording, clock: Clock, seconds: float) -> list[float]:
    """Drive beat as its service loop does, advancing the clock by each sleep it asks for."""
    sleeps, end = [], clock.now + timedelta(seconds=seconds)
    while clock.now < end:
        delay = scheduler.tick()
        sleeps.append(delay)
        clock.now += timedelta(seconds=max(delay, 0.001))
    return sleeps


def test_a_clock_step_back_an_hour_does_not_silence_beat(beat, settings) -> None:
    clock = Clock()
    scheduler = beat(clock)
    run_for(scheduler, clock, 30)
    before = scheduler.fired["sweeper"]
    assert before >= 5
    clock.now -= timedelta(hours=1)
    run_for(scheduler, clock, 30)
    assert scheduler.fired["sweeper"] - before >= 5  # not silent for the hour


def test_a_restart_after_a_step_back_does_not_silence_beat(beat, settings) -> None:
    clock = Clock()
    first = beat(clock)
    run_for(first, clock, 20)
    first.sync()  # last runs stored at ~12:00:20
    clock.now -= timedelta(hours=1)
    second = beat(clock)
    run_for(second, clock, 30)
    assert second.fired["sweeper"] >= 5


def test_a_clock_step_forward_fires_each_entry_once_then_keeps_its_pace(beat, settings) -> None:
    clock = Clock()
    scheduler = beat(clock)
    run_for(scheduler, clock, 10)
    before = Counter(scheduler.fired)
    clock.now += timedelta(hours=1)
    scheduler.tick()
    caught_up = Counter(scheduler.fired) - before
    assert caught_up["sweeper"] <= 1 and caught_up["cleanup"] <= 1  # no burst of missed runs
    run_for(scheduler, clock, 30)
    assert scheduler.fired["sweeper"] - before["sweeper"] >= 5


def test_beat_sleeps_until_the_next_due_task_instead_of_every_second(beat, settings, engine) -> None:
    clock = Clock()
    scheduler = beat(clock)
    run_for(scheduler, clock, 60)
    assert scheduler.fired["scheduler-tick"] == 0  # nothing scheduled: no tick published
    # Wake-ups are the ticks after which beat sleeps (0 or less: it loops on at once).
    idle_ticks = len([d for d in run_for(scheduler, clock, 60) if d > 0])
    # Wakes only for the other entries (the sweeper every sweep_interval_s), not every second.
    assert idle_ticks <= 2 * 60 / settings.beat.sweep_interval_s + 2
    assert idle_ticks < 60 / settings.beat.tick_interval_s
    assert max(scheduler.tick(), 0) <= MAX_IDLE_S


def test_a_scheduled_slot_fires_once_across_clock_steps(settings) -> None:
    from microclaw.runtime.wiring import app_engine, bootstrap_database

    bootstrap_database(settings)
    engine = app_engine(settings)
    add_task(engine, "hourly", "interval", str(3_600_000), START)
    assert claim_due_tasks(engine, timezone="UTC", now=START) == ["fake:g"]
    for moment in (START - timedelta(hours=1), START, START + timedelta(minutes=59)):
        assert claim_due_tasks(engine, timezone="UTC", now=moment) == []  # back, and back again
    with read_tx(engine) as conn:
        assert task_queue.busy_task_ids(conn) == {"hourly"}
    assert queues.TICK


def test_beat_keeps_running_when_its_state_cannot_be_stored(beat, settings, tmp_path) -> None:
    from tests.unit.store.test_db_faults import HOLD_SQLITE, holder, stop

    clock = Clock()
    scheduler = beat(clock)
    run_for(scheduler, clock, 5)
    scheduler._engine = create_sqlite_engine(settings.store.db_path, busy_timeout_s=0.2)
    proc = holder(HOLD_SQLITE, settings.store.db_path)
    try:
        scheduler.sync()  # database busy: logged, not raised (it used to stop beat)
        run_for(scheduler, clock, 5)
    finally:
        stop(proc)
    scheduler.sync()
    with read_tx(scheduler._engine) as conn:
        assert status.beat_entries(conn)["sweeper"].total_run_count == scheduler.fired["sweeper"]
