"""Celery beat for MicroClaw: the fixed schedule and a scheduler that keeps its state in SQLite.

The fixed schedule (`microclaw.runtime.celery_app.beat_schedule`) has four entries: the
scheduler tick (claims due scheduled tasks; beat publishes it only when one read shows a task
is due), the sweeper (re-kicks lost wake-ups, re-queues undelivered replies), cleanup (deletes
consumed broker rows, prunes old heartbeats) and the sandbox's idle stop. `DatabaseScheduler`
stores each entry's last run in the ``beat_state`` table instead of a shelve file, so beat has
no local state to lose or corrupt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery.beat import ScheduleEntry, Scheduler

from microclaw.config import Settings
from microclaw.runtime import queues
from microclaw.runtime.wiring import app_engine, bootstrap_database
from microclaw.store import status, tasks
from microclaw.store.db import read_tx, write_tx


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

    def sync(self) -> None:
        entries: list[ScheduleEntry] = list(self.schedule.values())
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

    def apply_async(
        self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        # The tick fires every second; publishing it only when a task is due keeps an idle
        # install from paying a Celery round trip (and a worker wake-up) each second.
        if entry.task == queues.TICK and not self._tasks_due():
            if advance:
                self.reserve(entry)
            return None
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)

    def _tasks_due(self) -> bool:
        now = datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        try:
            with read_tx(self._engine) as conn:
                return tasks.has_due(conn, now)
        except Exception:
            return True  # when unsure, let the tick task look

    @property
    def info(self) -> str:
        return "    . db -> beat_state table in the app database"
