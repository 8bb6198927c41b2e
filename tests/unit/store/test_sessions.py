"""store.sessions: which conversation a group is in and its turns, round-tripped."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from microclaw.agent.providers.base import ChatTurn, ToolCall
from microclaw.store import sessions
from microclaw.store.db import read_tx, write_tx

TURNS = [
    ChatTurn("user", "list files"),
    ChatTurn(
        "assistant",
        "",
        tool_calls=(ToolCall("c1", "bash", {"cmd": "ls"}), ToolCall("c2", "x", {}, "bad json", "{")),
    ),
    ChatTurn("tool", "a.txt", tool_call_id="c1"),
    ChatTurn("tool", "refused", tool_call_id="c2", is_error=True),
]


def test_a_new_session_points_the_group_at_it_and_keeps_the_turns_in_order(engine: Engine) -> None:
    with write_tx(engine) as conn:
        assert sessions.get_session_id(conn, "team") is None
        sid = sessions.new_session(conn, "team", TURNS[:1])
        sessions.append_turns(conn, sid, TURNS[1:])
        assert sessions.get_session_id(conn, "team") == sid
        assert sessions.load_turns(conn, sid) == TURNS
        assert sessions.session_tokens(conn, sid) == sum(sessions.estimate_tokens(t) for t in TURNS)
        newer = sessions.new_session(conn, "team")
        assert newer != sid and sessions.get_session_id(conn, "team") == newer
        assert sessions.load_turns(conn, newer) == [] and sessions.load_turns(conn, sid) == TURNS


@pytest.mark.parametrize(
    ("role", "tool_calls", "reason"),
    [("system", None, "invalid turn role"), ("assistant", "{not json", "undecodable tool calls")],
)
def test_an_undecodable_turn_raises_corrupt_session(engine: Engine, role, tool_calls, reason) -> None:
    with write_tx(engine) as conn:
        sid = sessions.new_session(conn, "team")
        conn.exec_driver_sql(
            "INSERT INTO session_turns (session_id, role, content, tool_calls, created_at_ms)"
            " VALUES (?, ?, 'x', ?, 0)",
            (sid, role, tool_calls),
        )
    with read_tx(engine) as conn, pytest.raises(sessions.CorruptSession, match=reason) as caught:
        sessions.load_turns(conn, sid)
    assert caught.value.session_id == sid
