"""OTA releases and device results (tables ``ota_releases``, ``ota_results``).

Statements only; the rules (signatures, cohorts, offers, halts) live in
`microclaw.gateway.ota` and their transactions in `microclaw.gateway.otastore`. Every function
runs inside the caller's transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class ReleaseRow:
    id: int
    kind: str
    board: str
    version: str
    sha256: str
    size: int
    min_version: str
    manifest: str  # canonical JSON, exactly the signed bytes (UTF-8)
    signature: str  # base64
    public_key: str  # hex
    percent: float
    stages: tuple[float, ...]
    halted: bool
    halt_reason: str | None
    halted_at_ms: int | None
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True)
class ResultRow:
    release_id: int
    device_id: str
    ok: bool
    counted_ok: bool
    reason: str | None
    metrics: dict[str, float]
    stage: float | None
    reported_at_ms: int


_RELEASE_COLUMNS = (
    "id, kind, board, version, sha256, size, min_version, manifest, signature, public_key, percent,"
    " stages, halted, halt_reason, halted_at_ms, created_at_ms, updated_at_ms"
)
_RESULT_COLUMNS = "release_id, device_id, ok, counted_ok, reason, metrics, stage, reported_at_ms"


def _release(row: Any) -> ReleaseRow:
    return ReleaseRow(
        row.id,
        row.kind,
        row.board,
        row.version,
        row.sha256,
        row.size,
        row.min_version,
        row.manifest,
        row.signature,
        row.public_key,
        float(row.percent),
        tuple(float(p) for p in json.loads(row.stages)),
        bool(row.halted),
        row.halt_reason,
        row.halted_at_ms,
        row.created_at_ms,
        row.updated_at_ms,
    )


def _result(row: Any) -> ResultRow:
    return ResultRow(
        row.release_id,
        row.device_id,
        bool(row.ok),
        bool(row.counted_ok),
        row.reason,
        json.loads(row.metrics) if row.metrics else {},
        row.stage,
        row.reported_at_ms,
    )


def add_release(
    conn: Connection,
    *,
    kind: str,
    board: str,
    version: str,
    sha256: str,
    size: int,
    min_version: str,
    manifest: str,
    signature: str,
    public_key: str,
    now_ms: int,
) -> int | None:
    """Record a release (not rolled out: 0 %); None when (kind, board, version) exists."""
    result = conn.execute(
        text(
            "INSERT INTO ota_releases (kind, board, version, sha256, size, min_version, manifest,"
            " signature, public_key, created_at_ms, updated_at_ms) VALUES (:kind, :board, :version,"
            " :sha, :size, :min, :manifest, :sig, :pub, :now, :now)"
            " ON CONFLICT (kind, board, version) DO NOTHING"
        ),
        {
            "kind": kind,
            "board": board,
            "version": version,
            "sha": sha256,
            "size": size,
            "min": min_version,
            "manifest": manifest,
            "sig": signature,
            "pub": public_key,
            "now": now_ms,
        },
    )
    if not result.rowcount:
        return None
    return int(conn.execute(text("SELECT last_insert_rowid()")).scalar_one())


def get_release(conn: Connection, release_id: int) -> ReleaseRow | None:
    row = conn.execute(
        text(f"SELECT {_RELEASE_COLUMNS} FROM ota_releases WHERE id = :id"), {"id": release_id}
    ).first()
    return _release(row) if row else None


def find_release(conn: Connection, kind: str, board: str, version: str) -> ReleaseRow | None:
    row = conn.execute(
        text(
            f"SELECT {_RELEASE_COLUMNS} FROM ota_releases"
            " WHERE kind = :kind AND board = :board AND version = :version"
        ),
        {"kind": kind, "board": board, "version": version},
    ).first()
    return _release(row) if row else None


def releases(conn: Connection, *, kind: str | None = None, board: str | None = None) -> list[ReleaseRow]:
    """Releases, oldest first, optionally of one kind and board."""
    where, values = [], {}
    if kind is not None:
        where.append("kind = :kind")
        values["kind"] = kind
    if board is not None:
        where.append("board = :board")
        values["board"] = board
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        text(f"SELECT {_RELEASE_COLUMNS} FROM ota_releases{clause} ORDER BY id"), values
    ).all()
    return [_release(r) for r in rows]


def releases_with_image(conn: Connection, sha256: str) -> list[ReleaseRow]:
    rows = conn.execute(
        text(f"SELECT {_RELEASE_COLUMNS} FROM ota_releases WHERE sha256 = :sha ORDER BY id"), {"sha": sha256}
    ).all()
    return [_release(r) for r in rows]


def set_percent(
    conn: Connection, release_id: int, percent: float, stages: tuple[float, ...], now_ms: int
) -> None:
    conn.execute(
        text("UPDATE ota_releases SET percent = :p, stages = :stages, updated_at_ms = :now WHERE id = :id"),
        {"id": release_id, "p": percent, "stages": json.dumps(list(stages)), "now": now_ms},
    )


def set_halted(conn: Connection, release_id: int, *, halted: bool, reason: str | None, now_ms: int) -> bool:
    """Halt (with why) or resume a release; False when it already was in that state."""
    result = conn.execute(
        text(
            "UPDATE ota_releases SET halted = :h, halt_reason = :reason, halted_at_ms = :at,"
            " updated_at_ms = :now WHERE id = :id AND halted != :h"
        ),
        {
            "id": release_id,
            "h": int(halted),
            "reason": reason if halted else None,
            "at": now_ms if halted else None,
            "now": now_ms,
        },
    )
    return bool(result.rowcount)


def newest_change(conn: Connection) -> int:
    """The latest ``updated_at_ms`` over all releases (0 without any): the gateway's watch."""
    return int(conn.execute(text("SELECT coalesce(max(updated_at_ms), 0) FROM ota_releases")).scalar_one())


def save_result(
    conn: Connection,
    *,
    release_id: int,
    device_id: str,
    ok: bool,
    counted_ok: bool,
    reason: str | None,
    metrics: dict[str, float],
    stage: float | None,
    now_ms: int,
) -> None:
    """Store a device's result for a release; a later report from the same device replaces it."""
    conn.execute(
        text(
            "INSERT INTO ota_results (release_id, device_id, ok, counted_ok, reason, metrics, stage,"
            " reported_at_ms) VALUES (:rid, :dev, :ok, :counted, :reason, :metrics, :stage, :now)"
            " ON CONFLICT (release_id, device_id) DO UPDATE SET ok = excluded.ok,"
            " counted_ok = excluded.counted_ok, reason = excluded.reason, metrics = excluded.metrics,"
            " stage = excluded.stage, reported_at_ms = excluded.reported_at_ms"
        ),
        {
            "rid": release_id,
            "dev": device_id,
            "ok": int(ok),
            "counted": int(counted_ok),
            "reason": reason,
            "metrics": json.dumps(metrics) if metrics else None,
            "stage": stage,
            "now": now_ms,
        },
    )


def results(conn: Connection, release_id: int) -> list[ResultRow]:
    rows = conn.execute(
        text(f"SELECT {_RESULT_COLUMNS} FROM ota_results WHERE release_id = :id ORDER BY id"),
        {"id": release_id},
    ).all()
    return [_result(r) for r in rows]


def tally(conn: Connection, release_id: int) -> dict[float | None, tuple[int, int]]:
    """``{stage: (successes, failures)}`` of a release's results, as counted."""
    rows = conn.execute(
        text(
            "SELECT stage, sum(counted_ok), sum(1 - counted_ok) FROM ota_results"
            " WHERE release_id = :id GROUP BY stage"
        ),
        {"id": release_id},
    ).all()
    return {(float(r[0]) if r[0] is not None else None): (int(r[1]), int(r[2])) for r in rows}
