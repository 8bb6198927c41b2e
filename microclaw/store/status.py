"""Operational state: the one owner of ``connector_status``, ``component_status``,
``worker_heartbeats`` and ``beat_state``.

Each row is written by the process it describes and read by ``status`` / ``health``
(`microclaw.runtime.status`): the host records each connector's state and last event, the
sandbox worker its readiness (``detail`` is JSON, encoded and decoded here), every Celery
process a heartbeat every few seconds (broadcast inspection does not work on the SQLite broker),
and beat the last run of each schedule entry (instead of a shelve file). Every write is an
upsert keyed by name, so a restarted process takes its row over.

Does not judge staleness or health (the status report does) and never reads the clock when a
caller passes ``now``. All functions run inside a transaction the caller opened.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, TextClause, text

from microclaw.store.db import now_ms

_CONNECTORS = text(
    "SELECT name, state, detail, last_error, last_event_at_ms, updated_at_ms FROM connector_status"
    " ORDER BY name"
)
_UPSERT_COMPONENT = text(
    "INSERT INTO component_status (name, state, detail, updated_at_ms) VALUES (:name, :state, :detail, :now)"
    " ON CONFLICT (name) DO UPDATE SET state = excluded.state, detail = excluded.detail,"
    " updated_at_ms = excluded.updated_at_ms"
)
_COMPONENT = text("SELECT name, state, detail, updated_at_ms FROM component_status WHERE name = :name")
_UPSERT_HEARTBEAT = text(
    "INSERT INTO worker_heartbeats (name, role, pid, started_at_ms, last_seen_ms)"
    " VALUES (:name, :role, :pid, :started, :now)"
    " ON CONFLICT (name) DO UPDATE SET role = excluded.role, pid = excluded.pid,"
    " last_seen_ms = excluded.last_seen_ms, started_at_ms = excluded.started_at_ms"
)
_HEARTBEATS = text(
    "SELECT name, role, pid, started_at_ms, last_seen_ms FROM worker_heartbeats ORDER BY role, name"
)
_PRUNE_HEARTBEATS = text("DELETE FROM worker_heartbeats WHERE last_seen_ms < :before")
_BEAT_ENTRIES = text("SELECT name, last_run_at, total_run_count FROM beat_state")
_UPSERT_BEAT_ENTRY = text(
    "INSERT INTO beat_state (name, last_run_at, total_run_count) VALUES (:name, :last_run_at, :count)"
    " ON CONFLICT (name) DO UPDATE SET last_run_at = excluded.last_run_at,"
    " total_run_count = excluded.total_run_count"
)


@dataclass(frozen=True)
class ConnectorRow:
    name: str
    state: str  # active | skipped | error | stopped
    detail: str | None
    last_error: str | None
    last_event_at_ms: int | None
    updated_at_ms: int


@dataclass(frozen=True)
class ComponentRow:
    name: str
    state: str  # ready | unavailable | stopped
    detail: dict[str, Any]
    updated_at_ms: int


@dataclass(frozen=True)
class HeartbeatRow:
    name: str
    role: str
    pid: int
    started_at_ms: int
    last_seen_ms: int


@dataclass(frozen=True)
class BeatEntry:
    name: str
    last_run_at: float  # epoch seconds
    total_run_count: int


# --- connectors ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _upsert_connector(columns: tuple[str, ...]) -> TextClause:
    """The upsert for one set of columns, built once: the host writes one per inbound message."""
    names = ", ".join(("name", *columns))
    values = ", ".join(f":{c}" for c in ("name", *columns))
    assignments = ", ".join(f"{c} = excluded.{c}" for c in columns)
    return text(
        f"INSERT INTO connector_status ({names}) VALUES ({values})"
        f" ON CONFLICT (name) DO UPDATE SET {assignments}"
    )


def record_connector(
    conn: Connection,
    name: str,
    state: str,
    *,
    detail: str | None = None,
    error: str | None = None,
    event: bool = False,
    now: int | None = None,
) -> None:
    """Upsert one connector's row: its state, and ``detail`` / ``last_error`` only when given;
    ``event`` stamps ``last_event_at_ms`` (an inbound message arrived)."""
    stamp = now_ms() if now is None else now
    values: dict[str, Any] = {"state": state, "updated_at_ms": stamp}
    if detail is not None:
        values["detail"] = detail
    if error is not None:
        values["last_error"] = error
    if event:
        values["last_event_at_ms"] = stamp
    conn.execute(_upsert_connector(tuple(values)), {"name": name, **values})


def connectors(conn: Connection) -> list[ConnectorRow]:
    """Every connector's row, by name."""
    return [ConnectorRow(*r) for r in conn.execute(_CONNECTORS)]


# --- components (the sandbox) -------------------------------------------------------------


def record_component(
    conn: Connection, name: str, state: str, detail: dict[str, Any], *, now: int | None = None
) -> None:
    """Upsert one component's readiness; ``detail`` is stored as JSON."""
    params = {
        "name": name,
        "state": state,
        "detail": json.dumps(detail, default=str, sort_keys=True),
        "now": now_ms() if now is None else now,
    }
    conn.execute(_UPSERT_COMPONENT, params)


def component(conn: Connection, name: str) -> ComponentRow | None:
    """The component's last report (``detail`` decoded), or None if it never reported."""
    row = conn.execute(_COMPONENT, {"name": name}).first()
    if row is None:
        return None
    return ComponentRow(row.name, row.state, json.loads(row.detail) if row.detail else {}, row.updated_at_ms)


# --- worker heartbeats --------------------------------------------------------------------


def record_heartbeat(
    conn: Connection, name: str, *, role: str, pid: int, started_at_ms: int, now: int | None = None
) -> None:
    """Upsert the process's heartbeat (``last_seen_ms`` = ``now``)."""
    params = {
        "name": name,
        "role": role,
        "pid": pid,
        "started": started_at_ms,
        "now": now_ms() if now is None else now,
    }
    conn.execute(_UPSERT_HEARTBEAT, params)


def heartbeats(conn: Connection) -> list[HeartbeatRow]:
    """Every heartbeat row, by role then name."""
    return [HeartbeatRow(*r) for r in conn.execute(_HEARTBEATS)]


def prune_heartbeats(conn: Connection, *, seen_before_ms: int) -> int:
    """Delete heartbeats last seen before ``seen_before_ms``; returns how many."""
    return int(conn.execute(_PRUNE_HEARTBEATS, {"before": seen_before_ms}).rowcount)


# --- beat ---------------------------------------------------------------------------------


def beat_entries(conn: Connection) -> dict[str, BeatEntry]:
    """Beat's stored state per schedule entry name."""
    return {r.name: BeatEntry(*r) for r in conn.execute(_BEAT_ENTRIES)}


def record_beat_entry(conn: Connection, name: str, *, last_run_at: float, total_run_count: int) -> None:
    """Upsert one schedule entry's last run (epoch seconds) and run count."""
    conn.execute(_UPSERT_BEAT_ENTRY, {"name": name, "last_run_at": last_run_at, "count": total_run_count})
