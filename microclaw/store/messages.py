"""Chats and messages: idempotent storage and the cursor queries the router needs.

Messages get a global, monotonic ``seq`` at insert time (inside the ``BEGIN IMMEDIATE`` that
stores them, so concurrent writers never share one). Cursors compare ``seq``, never timestamps.
The bot filter is NanoClaw's: ``is_bot_message = 0``, content not starting with
``<assistant>:`` (case-insensitive, as SQLite's LIKE), and content neither empty nor NULL.

All functions run inside a transaction the caller opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, not_, or_, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from microclaw.store.models import Chat, Message, table_of

_C = table_of(Chat)
_M = table_of(Message)

# Hot-path statements, built once (see microclaw/pipeline/leases.py for why).
_COLUMNS = (
    "seq, id, chat_jid, sender, sender_name, content, timestamp, is_from_me, is_bot_message,"
    " reply_to_message_id, reply_to_message_content, reply_to_sender_name"
)
_HUMAN = (
    "COALESCE(is_bot_message, 0) = 0 AND content NOT LIKE :bot_prefix ESCAPE '\\'"
    " AND content != '' AND content IS NOT NULL"
)
_UPSERT_CHAT = text(
    "INSERT INTO chats (jid, name, last_message_time, channel, is_group)"
    " VALUES (:jid, :name, :ts, :channel, :is_group)"
    " ON CONFLICT (jid) DO UPDATE SET"
    " last_message_time = MAX(COALESCE(chats.last_message_time, ''), excluded.last_message_time),"
    " channel = COALESCE(excluded.channel, chats.channel),"
    " is_group = COALESCE(excluded.is_group, chats.is_group),"
    " name = CASE WHEN :has_name THEN excluded.name ELSE chats.name END"
)
_INSERT_MESSAGE = text(
    "INSERT INTO messages (id, chat_jid, sender, sender_name, content, timestamp, is_from_me, is_bot_message,"
    " reply_to_message_id, reply_to_message_content, reply_to_sender_name, seq, received_at_ms)"
    " VALUES (:id, :chat_jid, :sender, :sender_name, :content, :timestamp, :is_from_me, :is_bot_message,"
    " :reply_to_message_id, :reply_to_message_content, :reply_to_sender_name,"
    " (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages), :received_at_ms)"
    " ON CONFLICT (id, chat_jid) DO NOTHING RETURNING seq"
)
_MAX_SEQ = text("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE chat_jid = :chat")
_AFTER = text(
    f"SELECT {_COLUMNS} FROM messages WHERE chat_jid = :chat AND seq > :after AND {_HUMAN} ORDER BY seq"
)
_COUNT_AFTER = text(f"SELECT COUNT(*) FROM messages WHERE chat_jid = :chat AND seq > :after AND {_HUMAN}")
_NEWEST_AFTER = text(
    f"SELECT * FROM (SELECT {_COLUMNS} FROM messages WHERE chat_jid = :chat AND seq > :after AND {_HUMAN}"
    " ORDER BY seq DESC LIMIT :limit) ORDER BY seq"
)
_MESSAGE_FIELDS = (
    "id",
    "chat_jid",
    "sender",
    "sender_name",
    "content",
    "timestamp",
    "is_from_me",
    "is_bot_message",
    "reply_to_message_id",
    "reply_to_message_content",
    "reply_to_sender_name",
)


@dataclass(frozen=True)
class StoredMessage:
    """A message as the router and prompt builder see it."""

    seq: int
    id: str
    chat_jid: str
    sender: str | None
    sender_name: str | None
    content: str | None
    timestamp: str | None
    is_from_me: bool
    is_bot_message: bool
    reply_to_message_id: str | None = None
    reply_to_message_content: str | None = None
    reply_to_sender_name: str | None = None


def _like_prefix(assistant_name: str) -> str:
    escaped = assistant_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}:%"


def not_bot(assistant_name: str) -> Any:
    """The SQL condition selecting human, non-empty messages (NanoClaw's bot filter)."""
    return and_(
        func.coalesce(_M.c.is_bot_message, 0) == 0,
        not_(_M.c.content.like(_like_prefix(assistant_name), escape="\\")),
        _M.c.content != "",
        _M.c.content.is_not(None),
    )


def upsert_chat(
    conn: Connection,
    jid: str,
    timestamp: str,
    *,
    name: str | None = None,
    channel: str | None = None,
    is_group: bool | None = None,
) -> None:
    """NanoClaw's storeChatMetadata: newer time kept, name replaced only when given."""
    conn.execute(
        _UPSERT_CHAT,
        {
            "jid": jid,
            "name": name or jid,
            "ts": timestamp,
            "channel": channel,
            "is_group": None if is_group is None else int(is_group),
            "has_name": bool(name),
        },
    )


def insert_message(conn: Connection, *, received_at_ms: int, **fields: Any) -> int | None:
    """Store a message unless (id, chat_jid) exists; returns its new seq, or None if a duplicate."""
    params = {name: fields.get(name) for name in _MESSAGE_FIELDS}
    params["received_at_ms"] = received_at_ms
    seq = conn.execute(_INSERT_MESSAGE, params).scalar()
    return None if seq is None else int(seq)


def upsert_message(conn: Connection, **fields: Any) -> int:
    """NanoClaw's storeMessage (INSERT OR REPLACE on (id, chat_jid)); an existing row keeps its seq.

    Every column is written: what the message does not carry becomes NULL and the flags 0/1, so
    stale reply fields never survive a redelivery.
    """
    row = {name: fields.get(name) for name in _MESSAGE_FIELDS}
    row["is_from_me"] = int(bool(row["is_from_me"]))
    row["is_bot_message"] = int(bool(row["is_bot_message"]))
    existing = conn.execute(
        select(_M.c.seq).where(_M.c.id == row["id"], _M.c.chat_jid == row["chat_jid"])
    ).first()
    if existing is None:
        return insert_message(conn, received_at_ms=int(fields.get("received_at_ms") or 0), **row) or 0
    conn.execute(update(_M).where(_M.c.id == row["id"], _M.c.chat_jid == row["chat_jid"]).values(**row))
    return int(existing.seq)


def _to_stored(row: Any) -> StoredMessage:
    return StoredMessage(
        seq=row.seq,
        id=row.id,
        chat_jid=row.chat_jid,
        sender=row.sender,
        sender_name=row.sender_name,
        content=row.content,
        timestamp=row.timestamp,
        is_from_me=bool(row.is_from_me),
        is_bot_message=bool(row.is_bot_message),
        reply_to_message_id=row.reply_to_message_id,
        reply_to_message_content=row.reply_to_message_content,
        reply_to_sender_name=row.reply_to_sender_name,
    )


def max_seq(conn: Connection, chat_jid: str) -> int:
    """The newest seq stored for the chat (0 when none)."""
    return int(conn.execute(_MAX_SEQ, {"chat": chat_jid}).scalar_one())


def messages_after(
    conn: Connection, chat_jid: str, after_seq: int, assistant_name: str
) -> list[StoredMessage]:
    """Every human, non-empty message with seq > ``after_seq``, oldest first."""
    params = {"chat": chat_jid, "after": after_seq, "bot_prefix": _like_prefix(assistant_name)}
    return [_to_stored(r) for r in conn.execute(_AFTER, params)]


def newest_after(
    conn: Connection, chat_jid: str, after_seq: int, assistant_name: str, limit: int
) -> tuple[list[StoredMessage], int]:
    """The newest ``limit`` human messages after ``after_seq`` (oldest first), and how many there were."""
    params = {"chat": chat_jid, "after": after_seq, "bot_prefix": _like_prefix(assistant_name)}
    total = int(conn.execute(_COUNT_AFTER, params).scalar_one())
    rows = conn.execute(_NEWEST_AFTER, {**params, "limit": limit})
    return [_to_stored(r) for r in rows], total


def last_bot_seq(conn: Connection, chat_jid: str, assistant_name: str) -> int:
    """Seq of the newest bot message in the chat (flag or ``<assistant>:`` prefix), 0 when none."""
    value = conn.execute(
        select(func.max(_M.c.seq)).where(
            _M.c.chat_jid == chat_jid,
            or_(_M.c.is_bot_message == 1, _M.c.content.like(_like_prefix(assistant_name), escape="\\")),
        )
    ).scalar_one()
    return int(value or 0)


# --- NanoClaw's remaining chat and message queries (contract §5.3) -------------------------

GROUP_SYNC_JID = "__group_sync__"
"""The sentinel ``chats`` row whose ``last_message_time`` is the last group-metadata sync."""


@dataclass(frozen=True)
class ChatRow:
    jid: str
    name: str | None
    last_message_time: str | None
    channel: str | None
    is_group: bool


def _now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def update_chat_name(conn: Connection, jid: str, name: str, *, now_iso: str | None = None) -> None:
    """NanoClaw's updateChatName: set the name only; a new row gets ``last_message_time`` = now."""
    stmt = sqlite_insert(_C).values(jid=jid, name=name, last_message_time=now_iso or _now_iso())
    conn.execute(stmt.on_conflict_do_update(index_elements=["jid"], set_={"name": stmt.excluded.name}))


def get_all_chats(conn: Connection) -> list[ChatRow]:
    """Every chat (the group-sync sentinel included, as in NanoClaw), most recent activity first."""
    rows = conn.execute(
        select(_C.c.jid, _C.c.name, _C.c.last_message_time, _C.c.channel, _C.c.is_group).order_by(
            _C.c.last_message_time.desc()
        )
    )
    return [ChatRow(r.jid, r.name, r.last_message_time, r.channel, bool(r.is_group)) for r in rows]


def get_last_group_sync(conn: Connection) -> str | None:
    """When group metadata was last synced (ISO string), None if never."""
    return conn.execute(select(_C.c.last_message_time).where(_C.c.jid == GROUP_SYNC_JID)).scalar()


def set_last_group_sync(conn: Connection, *, now_iso: str | None = None) -> None:
    """Record a group-metadata sync in the sentinel row (replacing it)."""
    values = {"jid": GROUP_SYNC_JID, "name": GROUP_SYNC_JID, "last_message_time": now_iso or _now_iso()}
    stmt = sqlite_insert(_C).values(**values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["jid"],
            set_={"name": stmt.excluded.name, "last_message_time": stmt.excluded.last_message_time},
        )
    )


def new_messages(
    conn: Connection, chat_jids: Sequence[str], after_seq: int, assistant_name: str, limit: int = 200
) -> tuple[list[StoredMessage], int]:
    """NanoClaw's getNewMessages on sequence cursors: across ``chat_jids``, the newest ``limit``
    human messages with seq > ``after_seq``, oldest first, and the new cursor (the highest seq
    returned, or ``after_seq`` when there is none or no chats were given)."""
    if not chat_jids:
        return [], after_seq
    newest = (
        select(_M)
        .where(_M.c.seq > after_seq, _M.c.chat_jid.in_(list(chat_jids)), not_bot(assistant_name))
        .order_by(_M.c.seq.desc())
        .limit(limit)
        .subquery()
    )
    rows = [_to_stored(r) for r in conn.execute(select(newest).order_by(newest.c.seq))]
    return rows, (rows[-1].seq if rows else after_seq)
