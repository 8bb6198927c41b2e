"""Status: one snapshot of everything a user asks "is it working?" about.

`collect_status()` reads the app database and the broker (never the platforms): connectors
(active / skipped / error, last error, last event), broker queue depths, group leases held,
runs in progress, outbox counts, worker and beat liveness (heartbeat rows), the next scheduled
runs and sandbox readiness (the ``component_status`` row the sandbox worker keeps current).
`health_problems()` reduces it to the list of reasons the system is not healthy (empty:
healthy). A role is unhealthy when its process stopped writing heartbeats, and also when it is
alive but does not take ready work: on the SQLite broker, ``queue_waits`` is how long the oldest
ready message of each queue has waited (publish time, or due time for a countdown); a router,
outbound or maintenance queue whose oldest ready message waited longer than `READY_STALE_MS`
fails health (a frozen pool, a stopped process, or a role saturated for that long). An
unavailable sandbox is reported but is not unhealthy (a machine without a
container runtime still chats; its tools fail hard). Rendering is the CLI's job.

`store_faults()` probes what makes writes fail right now: a full disk under the data files and
a write lock held past a short probe (someone holds the app database). While one is present,
heartbeats cannot be written either, so health reports the fault instead of naming the live
roles dead.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from microclaw.broker.store import ready_waits
from microclaw.broker.transport import queue_depths, sqlite_path
from microclaw.config import Settings
from microclaw.pipeline import leases
from microclaw.runtime import queues
from microclaw.runtime.queues import QUEUES
from microclaw.store import outbox, runs, tasks
from microclaw.store import status as store_status
from microclaw.store.db import now_ms, read_tx

HEARTBEAT_STALE_MS = 20_000
# Ready work older than this in a role's queue means the role is not taking it.
READY_STALE_MS = 10_000
# Queues whose waiting work makes the system unhealthy (the sandbox's does not, see above).
WATCHED_QUEUES = (queues.ROUTER, queues.OUTBOUND, queues.MAINTENANCE)


# Free space below which the data directory counts as full (SQLite needs a few pages to commit).
DISK_FULL_BELOW_BYTES = 64 * 1024
# How long health waits for the app database's write lock before calling it busy.
LOCK_PROBE_S = 0.5


def disk_fault(directory: Path) -> str | None:
    """``disk full: ...`` when the file system holding ``directory`` is (nearly) full."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if free < DISK_FULL_BELOW_BYTES:
        return f"disk full: {free} bytes free for {directory}; writes fail until space is freed"
    return None


def lock_fault(db_path: Path, *, timeout_s: float = LOCK_PROBE_S) -> str | None:
    """``database busy: ...`` when neither MicroClaw's write queue nor SQLite's write lock on
    ``db_path`` can be had within ``timeout_s`` (nothing is written: the probe rolls back)."""
    from microclaw.store.db import _flock_within

    lock_path = f"{db_path}-writelock"
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        fd = None
    if fd is not None:
        if not _flock_within(fd, timeout_s):  # the helper thread owns fd from here
            return f"database busy: MicroClaw's write lock on {db_path} is held past {timeout_s:g} s"
        try:
            return _sqlite_lock_fault(db_path, timeout_s)
        finally:
            os.close(fd)  # closing drops the flock
    return _sqlite_lock_fault(db_path, timeout_s)


def _sqlite_lock_fault(db_path: Path, timeout_s: float) -> str | None:
    if not db_path.exists():
        return None
    try:
        db = sqlite3.connect(db_path, timeout=timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        return f"database unavailable: {exc}"
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return f"database busy: another process holds the write lock on {db_path} (writes fail)"
        return f"database unavailable: {exc}"
    finally:
        db.close()
    return None


def store_faults(settings: Settings) -> list[str]:
    """What makes app-database writes fail now (see the module docstring); empty when none."""
    db_path = Path(settings.store.db_path)
    return [f for f in (disk_fault(db_path.parent), lock_fault(db_path)) if f]


def sandbox_status(conn: Connection, settings: Settings, now: int) -> dict[str, Any]:
    """The sandbox worker's last readiness report; ``stale`` when it stopped reporting.

    ``state`` is ``ready``, ``unavailable`` (``reason`` says why), ``stopped``, ``stale`` (the
    worker stopped reporting; ``last_state`` is what it said) or ``unknown`` (never reported).
    """
    row = store_status.component(conn, "sandbox")
    base = {"backend": settings.sandbox.backend, "image": settings.sandbox.image}
    if row is None:
        return {**base, "state": "unknown", "ready": None, "reason": "no sandbox worker has reported yet"}
    detail = row.detail
    age = now - row.updated_at_ms
    state = row.state
    stale_after = int(settings.sandbox.readiness_interval_s * 3000) + HEARTBEAT_STALE_MS
    if state != "stopped" and age > stale_after:
        state = "stale"
    return {
        **base,
        **detail,
        "state": state,
        "last_state": row.state,
        "ready": state == "ready",
        "updated_ms_ago": age,
    }


def collect_status(
    settings: Settings,
    engine: Engine,
    *,
    sandbox_probe: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A JSON-serialisable status snapshot."""
    faults = store_faults(settings)
    now = now_ms()
    with read_tx(engine) as conn:
        connectors = [
            {
                "name": r.name,
                "state": r.state,
                "detail": r.detail,
                "last_error": r.last_error,
                "last_event_at_ms": r.last_event_at_ms,
            }
            for r in store_status.connectors(conn)
        ]
        held = [
            {"name": r.name, "holder": r.holder, "token": r.token, "expires_in_ms": r.expires_at_ms - now}
            for r in leases.held(conn, now_ms=now)
        ]
        running = runs.count_running(conn)
        next_runs = [
            {
                "id": r.id,
                "chat_jid": r.chat_jid,
                "schedule": f"{r.schedule_type} {r.schedule_value}",
                "next_run": r.next_run,
            }
            for r in tasks.next_scheduled(conn, limit=5)
        ]
        workers = [
            {
                "name": r.name,
                "role": r.role,
                "pid": r.pid,
                "alive": now - r.last_seen_ms < HEARTBEAT_STALE_MS,
                "last_seen_ms_ago": now - r.last_seen_ms,
            }
            for r in store_status.heartbeats(conn)
        ]
        outbox_counts = outbox.counts(conn)
        sandbox = sandbox_status(conn, settings, now)
    return {
        "assistant_name": settings.assistant_name,
        "timezone": settings.timezone,
        "db_path": str(settings.store.db_path),
        "broker": "sqlite" if settings.broker.is_sqlite else settings.broker.url.split("://", 1)[0],
        "connectors": connectors,
        "queues": queue_depths(settings.broker.url, QUEUES),
        "queue_waits": queue_waits(settings, now),
        "leases": held,
        "runs_in_progress": running,
        "outbox": outbox_counts,
        "workers": workers,
        "scheduler_next_runs": next_runs,
        "sandbox": sandbox_probe() if sandbox_probe else sandbox,
        "store_faults": faults,
    }


def queue_waits(settings: Settings, now: int) -> dict[str, int]:
    """Ms the oldest ready message of each queue has waited (SQLite broker only; {} otherwise)."""
    if not settings.broker.is_sqlite:
        return {}
    return ready_waits(sqlite_path(settings.broker.url), QUEUES, now=now)


def health_problems(status: dict[str, Any]) -> list[str]:
    """Why the system is unhealthy; an empty list means healthy."""
    problems = []
    for c in status["connectors"]:
        if c["state"] == "error":
            problems.append(f"connector {c['name']}: {c['last_error'] or c['detail']}")
    faults = status.get("store_faults") or []
    problems.extend(faults)
    if faults:  # no process can write its heartbeat now: its age says nothing
        return problems
    # Roles are what each process serves (``router,outbound,maintenance,beat`` for the default
    # worker); rows from before carried queue names (``microclaw.router``).
    alive_roles = {
        role.removeprefix("microclaw.")
        for w in status["workers"]
        if w["alive"]
        for role in w["role"].split(",")
    }
    for role in ("router", "outbound", "beat"):
        if role not in alive_roles:
            problems.append(f"no live {role} process")
    for queue in WATCHED_QUEUES:
        waited = status.get("queue_waits", {}).get(queue, 0)
        if waited > READY_STALE_MS:
            problems.append(
                f"{queue}: ready work has waited {waited / 1000:.0f} s and no worker takes it"
                " (the role is frozen, stopped or saturated)"
            )
    return problems
