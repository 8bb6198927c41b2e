"""Celery beat for MicroClaw: the fixed schedule and a scheduler that keeps its state in SQLite.

The fixed schedule (`microclaw.runtime.celery_app.beat_schedule`) has four entries: the
scheduler tick (claims due scheduled tasks; beat publishes it only when one read shows a task
is due), the sweeper (re-kicks lost wake-ups, re-queues undelivered replies), cleanup (deletes
consumed broker rows, prunes old heartbeats) and the sandbox's idle stop. `DatabaseScheduler`
stores each entry's last run in the ``beat_state`` table instead of a shelve file, so beat has
no local state to lose or corrupt.

Sleeping: the tick entry is not polled every ``tick_interval_s``; it is due when the soonest
active ``scheduled_tasks.next_run`` has come, and beat sleeps until then, the next other entry,
or `MAX_IDLE_S` at most (a task created meanwhile is seen at the next wake-up; the sweeper
entry wakes beat every ``sweep_interval_s`` anyway).

Wall-clock steps: Celery keeps each entry's last run and its heap of wake-up times in wall
time, so a clock stepped back an hour (or a stored last run from "the future" after a restart)
would silence every entry for that hour. Before each tick any last run later than now is
clamped to now and the heap rebuilt; a step forward makes each entry due once. Scheduled
task slots are claimed by their ``next_run`` in the database, so no step fires a slot twice.

Where it runs: `BeatThread` runs the same scheduler as a thread of the default worker
(``celery worker --embed-beat``, see ``workers/app.py``), without Celery's ``-B``, which forks
a process for it. The scale-out Procfile runs it as its own process (``celery beat``).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from celery import Celery, signals
from celery.beat import ScheduleEntry, Scheduler, Service

from microclaw.config import Settings
from microclaw.errors import TransientStoreError
from microclaw.runtime import queues
from microclaw.runtime.wiring import app_engine, bootstrap_database
from microclaw.store import status, tasks
from microclaw.store.db import read_tx, write_tx

logger = logging.getLogger(__name__)

# The longest beat sleeps between looks at the scheduled tasks' next run.
MAX_IDLE_S = 30.0


class DatabaseScheduler(Scheduler):
    """Beat scheduler whose per-entry state lives in the app database."""

    def setup_schedule(self) -> None:
        settings: Settings = self.app.conf.microclaw_settings
        bootstrap_database(settings)  # beat may start before the host has migrated
        self._engine = app_engine(settings)
        self.merge_inplace(self.app.conf.beat_schedule)
        with read_tx(self._engine) as conn:
            stored = status.beat_entries(conn)
        for name, entry in self.schedule.items():
            row = stored.get(name)
            if row is not None:
                entry.last_run_at = datetime.fromtimestamp(row.last_run_at, tz=UTC)
                entry.total_run_count = row.total_run_count
        self._clamp_future_runs()

    def _now(self) -> datetime:
        now = self.app.now()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)

    def _clamp_future_runs(self) -> bool:
        """Clamp last runs later than now (the clock stepped back) to now; whether any was."""
        now = self._now()
        clamped = []
        for entry in self.schedule.values():
            last = entry.last_run_at
            if last is None:
                continue
            if last.tzinfo is None:
                last = last.replace(tzinfo=UTC)
            if last > now:
                entry.last_run_at = now
                clamped.append(entry.name)
        if clamped:
            logger.warning("beat: clock stepped back; last runs clamped", extra={"entries": clamped})
        return bool(clamped)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self._clamp_future_runs() or self._heap_in_future():
            self._heap = None  # its wake-up times are wall times from before the step
        return float(super().tick(*args, **kwargs))

    def _heap_in_future(self) -> bool:
        """Whether a wake-up in the heap lies further ahead than its entry could ask for."""
        if not self._heap:
            return False
        now = self._when(self._heap[0][2], 0)
        return any(event[0] - now > max(_interval_s(event[2]), MAX_IDLE_S) + 1.0 for event in self._heap)

    def is_due(self, entry: ScheduleEntry) -> tuple[bool, float]:
        if entry.task != queues.TICK:
            return super().is_due(entry)
        interval = _interval_s(entry)
        wait = self._seconds_to_next_task()
        if wait is None:
            return False, MAX_IDLE_S
        if wait <= 0:
            return True, interval
        return False, min(max(wait, interval / 10), MAX_IDLE_S)

    def _seconds_to_next_task(self) -> float | None:
        """Seconds until the soonest active scheduled task is due (<= 0: due); None if none."""
        try:
            with read_tx(self._engine) as conn:
                soonest = tasks.next_scheduled(conn, limit=1)
        except Exception:
            logger.warning("beat: could not read the next scheduled run", exc_info=True)
            return 0.0  # when unsure, let the tick task look
        if not soonest or soonest[0].next_run is None:
            return None
        try:
            due = datetime.fromisoformat(soonest[0].next_run.replace("Z", "+00:00"))
        except ValueError:
            return 0.0  # the tick pauses a task with an unreadable time
        if due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        return (due - self._now()).total_seconds()

    def sync(self) -> None:
        """Store each entry's last run. A busy database or a full disk is logged and skipped:
        the state stays in memory and the next sync stores it (beat must not exit over it)."""
        entries: list[ScheduleEntry] = list(self.schedule.values())
        try:
            with write_tx(self._engine) as conn:
                for entry in entries:
                    if entry.last_run_at is None:
                        continue
                    last = entry.last_run_at
                    if last.tzinfo is None:
                        last = last.replace(tzinfo=UTC)
                    status.record_beat_entry(
                        conn, entry.name, last_run_at=last.timestamp(), total_run_count=entry.total_run_count
                    )
        except TransientStoreError as exc:
            logger.warning("beat: could not store its state (%s); will retry at the next sync", exc)

    @property
    def info(self) -> str:
        return "    . db -> beat_state table in the app database"


def _interval_s(entry: ScheduleEntry) -> float:
    run_every = getattr(entry.schedule, "run_every", None)
    return run_every.total_seconds() if run_every is not None else MAX_IDLE_S


class BeatThread(threading.Thread):
    """Beat inside a worker process: Celery's beat service loop, sleeping on an event so that
    stopping is immediate (Celery's threaded variant ticks every second to notice a stop).

    A failing tick (the database busy or full, the broker file being reset) is logged and
    retried after a short pause: an exception must not end beat silently inside a live worker.
    """

    RETRY_S = 5.0

    def __init__(self, app: Celery) -> None:
        super().__init__(name="beat", daemon=True)
        self.service = Service(app, scheduler_cls=app.conf.beat_scheduler)
        self._halt = threading.Event()

    def run(self) -> None:
        signals.beat_init.send(sender=self.service)
        scheduler = self.service.scheduler
        logger.info("beat: running in this worker (%s)", type(scheduler).__name__)
        while not self._halt.is_set():
            try:
                interval = scheduler.tick()
                if scheduler.should_sync():
                    scheduler._do_sync()
            except Exception:
                logger.exception("beat: tick failed; retrying in %.0f s", self.RETRY_S)
                interval = self.RETRY_S
            self._halt.wait(max(float(interval or 0.0), 0.01))
        try:
            scheduler.close()  # stores each entry's last run
        except Exception:
            logger.warning("beat: could not store its state at stop", exc_info=True)

    def stop(self, timeout: float = 10.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout)
