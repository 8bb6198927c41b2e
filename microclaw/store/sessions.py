"""Agent sessions: which conversation a group is in (NanoClaw's ``sessions`` table) and its turns.

``sessions`` maps a group folder to its live ``session_id``; ``session_turns`` holds that
session's turns in order. Compaction starts a new session id holding the summary and the recent
turns, so the old turns stay in the table until `prune` removes sessions no group points at.
A row that cannot be decoded raises `CorruptSession`; the agent then starts a fresh session.

Turns are stored as plain columns (role, content, tool call id, JSON tool calls, error flag);
this module knows nothing about providers beyond `ChatTurn` and `ToolCall`. All functions run
inside a transaction the caller opened.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from sqlalchemy import Connection, text

from microclaw.agent.providers.base import ChatTurn, ToolCall
from microclaw.store.db import now_ms

__all__ = [
    "CorruptSession",
    "append_turns",
    "estimate_tokens",
    "get_session_id",
    "load_turns",
    "new_session",
    "session_tokens",
]

_GET = text("SELECT session_id FROM sessions WHERE group_folder = :folder")
_SET = text(
    "INSERT INTO sessions (group_folder, session_id) VALUES (:folder, :sid)"
    " ON CONFLICT (group_folder) DO UPDATE SET session_id = excluded.session_id"
)
_TURNS = text(
    "SELECT role, content, tool_call_id, tool_calls, is_error FROM session_turns"
    " WHERE session_id = :sid ORDER BY id"
)
_TOKENS = text("SELECT COALESCE(SUM(tokens), 0) FROM session_turns WHERE session_id = :sid")
_INSERT = text(
    "INSERT INTO session_turns (session_id, role, content, tool_call_id, tool_calls, is_error, tokens,"
    " created_at_ms) VALUES (:sid, :role, :content, :tool_call_id, :tool_calls, :is_error, :tokens, :now)"
)
_ROLES = frozenset({"user", "assistant", "tool"})


class CorruptSession(Exception):
    """A stored turn could not be decoded; ``session_id`` names the session."""

    def __init__(self, session_id: str, reason: str) -> None:
        super().__init__(f"session {session_id}: {reason}")
        self.session_id = session_id


def estimate_tokens(turn: ChatTurn) -> int:
    """A rough token count (4 characters per token), good enough for a compaction budget."""
    size = len(turn.content) + sum(len(c.name) + len(json.dumps(c.arguments)) for c in turn.tool_calls)
    return size // 4 + 4


def get_session_id(conn: Connection, group_folder: str) -> str | None:
    return conn.execute(_GET, {"folder": group_folder}).scalar_one_or_none()


def new_session(conn: Connection, group_folder: str, turns: Sequence[ChatTurn] = ()) -> str:
    """Point the group at a fresh session (optionally seeded with ``turns``); returns its id."""
    session_id = uuid.uuid4().hex
    conn.execute(_SET, {"folder": group_folder, "sid": session_id})
    append_turns(conn, session_id, turns)
    return session_id


def load_turns(conn: Connection, session_id: str) -> list[ChatTurn]:
    """The session's turns in order; `CorruptSession` if a row is not a valid turn."""
    turns: list[ChatTurn] = []
    for row in conn.execute(_TURNS, {"sid": session_id}):
        if row.role not in _ROLES or row.content is None:
            raise CorruptSession(session_id, f"invalid turn role {row.role!r}")
        calls: tuple[ToolCall, ...] = ()
        if row.tool_calls:
            try:
                calls = tuple(
                    ToolCall(c["id"], c["name"], dict(c["arguments"]), c.get("error"), c.get("raw_arguments"))
                    for c in json.loads(row.tool_calls)
                )
            except (ValueError, TypeError, KeyError) as exc:
                raise CorruptSession(session_id, f"undecodable tool calls ({exc})") from exc
        turns.append(ChatTurn(row.role, row.content, row.tool_call_id, calls, bool(row.is_error)))
    return turns


def append_turns(conn: Connection, session_id: str, turns: Sequence[ChatTurn]) -> None:
    now = now_ms()
    for turn in turns:
        conn.execute(
            _INSERT,
            {
                "sid": session_id,
                "role": turn.role,
                "content": turn.content,
                "tool_call_id": turn.tool_call_id,
                "tool_calls": json.dumps(
                    [
                        {
                            "id": c.id,
                            "name": c.name,
                            "arguments": c.arguments,
                            "error": c.error,
                            "raw_arguments": c.raw_arguments,
                        }
                        for c in turn.tool_calls
                    ]
                )
                if turn.tool_calls
                else None,
                "is_error": int(turn.is_error),
                "tokens": estimate_tokens(turn),
                "now": now,
            },
        )


def session_tokens(conn: Connection, session_id: str) -> int:
    """The estimated size of the session, in tokens."""
    return int(conn.execute(_TOKENS, {"sid": session_id}).scalar_one())
