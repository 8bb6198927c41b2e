"""Registered groups and the router's per-group state rows.

Registered groups keep NanoClaw's storage quirks: ``trigger_pattern`` holds the plain trigger
string, ``requires_trigger`` defaults to 1 (NULL reads back as None, meaning "required"), and an
invalid folder is refused on write and skipped on read. `GroupState` rows are created lazily.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from microclaw.core.groups import is_valid_group_folder
from microclaw.store.db import update_statement
from microclaw.store.models import RegisteredGroup, table_of

logger = logging.getLogger(__name__)
_G = table_of(RegisteredGroup)

_GET_GROUP = text(
    "SELECT jid, name, folder, trigger_pattern, added_at, container_config, requires_trigger, is_main"
    " FROM registered_groups WHERE jid = :jid"
)
_GET_STATE = text(
    "SELECT chat_jid, cursor_seq, seen_seq, retry_count, retry_at_ms, kick_requested_ms"
    " FROM group_state WHERE chat_jid = :chat"
)
_STATE_CHATS = text("SELECT chat_jid FROM group_state")
_CREATE_STATE = text("INSERT INTO group_state (chat_jid) VALUES (:chat) ON CONFLICT (chat_jid) DO NOTHING")
_REQUEST_KICK = text(
    "INSERT INTO group_state (chat_jid, kick_requested_ms) VALUES (:chat, :now)"
    " ON CONFLICT (chat_jid) DO UPDATE SET kick_requested_ms = excluded.kick_requested_ms"
    " WHERE group_state.kick_requested_ms IS NULL RETURNING chat_jid"
)


@dataclass(frozen=True)
class Group:
    jid: str
    name: str
    folder: str
    trigger: str
    added_at: str
    requires_trigger: bool | None
    is_main: bool
    container_config: dict[str, Any] | None


@dataclass(frozen=True)
class GroupStateRow:
    chat_jid: str
    cursor_seq: int
    seen_seq: int
    retry_count: int
    retry_at_ms: int | None
    kick_requested_ms: int | None


def _to_group(row: Any) -> Group | None:
    if not is_valid_group_folder(row.folder):
        logger.warning("skipping registered group with invalid folder", extra={"chat_jid": row.jid})
        return None
    try:
        config = json.loads(row.container_config) if row.container_config else None
    except ValueError:
        config = None
    return Group(
        jid=row.jid,
        name=row.name,
        folder=row.folder,
        trigger=row.trigger_pattern,
        added_at=row.added_at,
        requires_trigger=None if row.requires_trigger is None else row.requires_trigger == 1,
        is_main=row.is_main == 1,
        container_config=config,
    )


def register_group(
    conn: Connection,
    *,
    jid: str,
    name: str,
    folder: str,
    trigger: str,
    requires_trigger: bool | None = None,
    is_main: bool = False,
    container_config: dict[str, Any] | None = None,
    added_at: str | None = None,
) -> Group:
    """Insert or replace a registered group (NanoClaw's setRegisteredGroup).

    ValueError on a bad folder, or on a folder another chat's group already uses (nothing is
    written; the message says which chat).
    """
    if not is_valid_group_folder(folder):
        raise ValueError(f"invalid group folder {folder!r}")
    owner = conn.execute(select(_G.c.jid).where(_G.c.folder == folder, _G.c.jid != jid)).scalar()
    if owner is not None:
        raise ValueError(f"folder {folder!r} is already used by {owner}; choose another folder")
    values = {
        "jid": jid,
        "name": name,
        "folder": folder,
        "trigger_pattern": trigger,
        "added_at": added_at or datetime.now(tz=UTC).isoformat().replace("+00:00", "Z"),
        "container_config": json.dumps(container_config) if container_config else None,
        "requires_trigger": 1 if requires_trigger is None else int(bool(requires_trigger)),
        "is_main": int(bool(is_main)),
    }
    stmt = sqlite_insert(_G).values(**values)
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["jid"], set_={k: stmt.excluded[k] for k in values})
    )
    group = _to_group(conn.execute(select(_G).where(_G.c.jid == jid)).one())
    assert group is not None
    return group


def get_group(conn: Connection, jid: str) -> Group | None:
    row = conn.execute(_GET_GROUP, {"jid": jid}).first()
    return _to_group(row) if row else None


def all_groups(conn: Connection) -> list[Group]:
    return [g for g in (_to_group(r) for r in conn.execute(select(_G).order_by(_G.c.added_at))) if g]


def registered_folders(conn: Connection) -> dict[str, str]:
    """Chat jid -> folder for every valid registered group (the IPC rules' ``registered`` map)."""
    return {g.jid: g.folder for g in all_groups(conn)}


def get_state(conn: Connection, chat_jid: str) -> GroupStateRow:
    """The group's router state, created with zero cursors if missing."""
    row = conn.execute(_GET_STATE, {"chat": chat_jid}).first()
    if row is None:
        conn.execute(_CREATE_STATE, {"chat": chat_jid})
        row = conn.execute(_GET_STATE, {"chat": chat_jid}).one()
    return GroupStateRow(*row)


def set_state(conn: Connection, chat_jid: str, **values: Any) -> None:
    """Update some of the group's state columns."""
    conn.execute(
        update_statement("group_state", tuple(sorted(values)), "chat_jid"), {**values, "_key": chat_jid}
    )


def chats_with_state(conn: Connection) -> set[str]:
    """Every chat that has a state row (every group the router or inbound path has touched)."""
    return {r[0] for r in conn.execute(_STATE_CHATS)}


def request_kick(conn: Connection, chat_jid: str, now_ms: int) -> bool:
    """Mark a wake-up as outstanding; True when the caller should publish a kick (none was)."""
    return conn.execute(_REQUEST_KICK, {"chat": chat_jid, "now": now_ms}).first() is not None
