"""Paired devices and pairing attempts (tables ``devices``, ``device_pairings``).

Statements only; the rules (code and token lifetimes, who may pair, what a revoked device may
do) live in `microclaw.gateway.pairing` and `microclaw.gateway.sessions`. Every function runs
inside the caller's transaction. Pairing secrets and tokens are never stored in clear: callers
pass SHA-256 hashes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, text

ACTIVE = "active"
REVOKED = "revoked"


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    name: str
    chat_jid: str
    status: str
    cert_serial: str
    cert_fingerprint: str
    paired_at_ms: int
    revoked_at_ms: int | None
    online: bool
    last_seen_ms: int | None
    fw_version: str | None
    model_version: str | None
    capabilities: tuple[str, ...]
    board: str | None = None


@dataclass(frozen=True)
class PairingRow:
    code: str
    device_id: str
    secret_hash: str
    created_at_ms: int
    expires_at_ms: int
    claimed_at_ms: int | None
    name: str | None
    token_hash: str | None
    token_expires_at_ms: int | None
    used_at_ms: int | None


_DEVICE_COLUMNS = (
    "device_id, name, chat_jid, status, cert_serial, cert_fingerprint, paired_at_ms, revoked_at_ms,"
    " online, last_seen_ms, fw_version, model_version, capabilities, board"
)
_FINGERPRINTS = text(
    "SELECT device_id, cert_fingerprint FROM devices WHERE status = :active AND device_id IN :ids"
).bindparams(bindparam("ids", expanding=True))
_PAIRING_COLUMNS = (
    "code, device_id, secret_hash, created_at_ms, expires_at_ms, claimed_at_ms, name, token_hash,"
    " token_expires_at_ms, used_at_ms"
)


def _device(row: Any) -> DeviceRow:
    caps = json.loads(row.capabilities) if row.capabilities else []
    return DeviceRow(
        row.device_id,
        row.name,
        row.chat_jid,
        row.status,
        row.cert_serial,
        row.cert_fingerprint,
        row.paired_at_ms,
        row.revoked_at_ms,
        bool(row.online),
        row.last_seen_ms,
        row.fw_version,
        row.model_version,
        tuple(str(c) for c in caps),
        row.board,
    )


def _pairing(row: Any) -> PairingRow:
    return PairingRow(*row)


# --- pairing attempts -------------------------------------------------------------------


def add_pairing(
    conn: Connection, *, code: str, device_id: str, secret_hash: str, now_ms: int, expires_at_ms: int
) -> None:
    """Record a new pairing attempt (the code must be unused: primary key)."""
    conn.execute(
        text(
            "INSERT INTO device_pairings (code, device_id, secret_hash, created_at_ms, expires_at_ms)"
            " VALUES (:code, :device_id, :secret_hash, :now, :expires)"
        ),
        {
            "code": code,
            "device_id": device_id,
            "secret_hash": secret_hash,
            "now": now_ms,
            "expires": expires_at_ms,
        },
    )


def count_open_pairings(conn: Connection, now_ms: int) -> int:
    """Attempts whose code has not expired and whose token was not used."""
    return int(
        conn.execute(
            text("SELECT count(*) FROM device_pairings WHERE expires_at_ms > :now AND used_at_ms IS NULL"),
            {"now": now_ms},
        ).scalar_one()
    )


def delete_expired_pairings(conn: Connection, before_ms: int) -> int:
    """Forget attempts that expired before ``before_ms`` (claimed or not)."""
    result = conn.execute(
        text("DELETE FROM device_pairings WHERE expires_at_ms < :before"), {"before": before_ms}
    )
    return int(result.rowcount or 0)


def get_pairing(conn: Connection, code: str) -> PairingRow | None:
    row = conn.execute(
        text(f"SELECT {_PAIRING_COLUMNS} FROM device_pairings WHERE code = :code"), {"code": code}
    ).first()
    return _pairing(row) if row else None


def pairing_by_token(conn: Connection, token_hash: str) -> PairingRow | None:
    row = conn.execute(
        text(f"SELECT {_PAIRING_COLUMNS} FROM device_pairings WHERE token_hash = :token"),
        {"token": token_hash},
    ).first()
    return _pairing(row) if row else None


def mark_claimed(conn: Connection, code: str, *, name: str, now_ms: int) -> bool:
    """Claim an unclaimed attempt; False when it was already claimed (or does not exist)."""
    result = conn.execute(
        text(
            "UPDATE device_pairings SET claimed_at_ms = :now, name = :name"
            " WHERE code = :code AND claimed_at_ms IS NULL"
        ),
        {"code": code, "name": name, "now": now_ms},
    )
    return bool(result.rowcount)


def set_token(conn: Connection, code: str, *, token_hash: str, expires_at_ms: int) -> None:
    """Give a claimed attempt a (new) token; any earlier token of it stops working."""
    conn.execute(
        text(
            "UPDATE device_pairings SET token_hash = :token, token_expires_at_ms = :expires"
            " WHERE code = :code AND used_at_ms IS NULL"
        ),
        {"code": code, "token": token_hash, "expires": expires_at_ms},
    )


def mark_used(conn: Connection, code: str, now_ms: int) -> bool:
    """Spend the attempt's token; False when it was already spent."""
    result = conn.execute(
        text("UPDATE device_pairings SET used_at_ms = :now WHERE code = :code AND used_at_ms IS NULL"),
        {"code": code, "now": now_ms},
    )
    return bool(result.rowcount)


# --- devices ----------------------------------------------------------------------------


def save_device(
    conn: Connection,
    *,
    device_id: str,
    name: str,
    chat_jid: str,
    cert_serial: str,
    cert_fingerprint: str,
    now_ms: int,
) -> None:
    """Insert or replace a device as freshly paired (active, offline) with this certificate."""
    conn.execute(
        text(
            "INSERT INTO devices (device_id, name, chat_jid, status, cert_serial, cert_fingerprint,"
            " paired_at_ms, online) VALUES (:id, :name, :chat, :status, :serial, :fp, :now, 0)"
            " ON CONFLICT(device_id) DO UPDATE SET name = excluded.name, chat_jid = excluded.chat_jid,"
            " status = excluded.status, cert_serial = excluded.cert_serial,"
            " cert_fingerprint = excluded.cert_fingerprint, paired_at_ms = excluded.paired_at_ms,"
            " revoked_at_ms = NULL, online = 0"
        ),
        {
            "id": device_id,
            "name": name,
            "chat": chat_jid,
            "status": ACTIVE,
            "serial": cert_serial,
            "fp": cert_fingerprint,
            "now": now_ms,
        },
    )


def get_device(conn: Connection, device_id: str) -> DeviceRow | None:
    row = conn.execute(
        text(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = :id"), {"id": device_id}
    ).first()
    return _device(row) if row else None


def all_devices(conn: Connection) -> list[DeviceRow]:
    rows = conn.execute(text(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY device_id")).all()
    return [_device(r) for r in rows]


def revoke(conn: Connection, device_id: str, now_ms: int) -> bool:
    """Mark a device revoked; False when it does not exist or already is."""
    result = conn.execute(
        text(
            "UPDATE devices SET status = :revoked, revoked_at_ms = :now"
            " WHERE device_id = :id AND status != :revoked"
        ),
        {"id": device_id, "now": now_ms, "revoked": REVOKED},
    )
    return bool(result.rowcount)


def record_session(
    conn: Connection,
    device_id: str,
    *,
    online: bool,
    now_ms: int,
    fw_version: str | None = None,
    model_version: str | None = None,
    capabilities: Iterable[str] | None = None,
    board: str | None = None,
) -> None:
    """A session opened (with what the device reported) or closed."""
    values: dict[str, Any] = {"id": device_id, "online": int(online), "now": now_ms}
    sets = "online = :online, last_seen_ms = :now"
    if online:
        sets += ", fw_version = :fw, model_version = :model, capabilities = :caps, board = :board"
        values.update(
            fw=fw_version, model=model_version, caps=json.dumps(list(capabilities or ())), board=board
        )
    conn.execute(text(f"UPDATE devices SET {sets} WHERE device_id = :id"), values)


def mark_all_offline(conn: Connection, now_ms: int) -> int:
    """At gateway start: no session survives a restart."""
    result = conn.execute(
        text("UPDATE devices SET online = 0, last_seen_ms = :now WHERE online = 1"), {"now": now_ms}
    )
    return int(result.rowcount or 0)


def fingerprints(conn: Connection, device_ids: Iterable[str]) -> dict[str, str]:
    """``device_id -> fingerprint`` of the given devices that are active (revoked ones absent)."""
    ids = list(device_ids)
    if not ids:
        return {}
    # One statement for any number of ids (an expanding parameter): a statement per list length
    # would fill the engine's compiled cache with 1,000-parameter entries (~3 MB in the gateway).
    rows = conn.execute(_FINGERPRINTS, {"active": ACTIVE, "ids": ids}).all()
    return {r.device_id: r.cert_fingerprint for r in rows}
