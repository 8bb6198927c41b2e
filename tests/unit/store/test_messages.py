"""store.messages: idempotent inserts, global seq order and the router's cursor queries."""

from __future__ import annotations

from sqlalchemy import Engine

from microclaw.store import messages
from microclaw.store.db import read_tx, write_tx


def put(conn, mid: str, chat: str = "fake:a", content: str | None = "hi", **fields) -> int | None:
    return messages.insert_message(
        conn,
        received_at_ms=1,
        id=mid,
        chat_jid=chat,
        sender="u1",
        sender_name="U1",
        content=content,
        timestamp="2026-01-01T00:00:00.000Z",
        is_from_me=fields.pop("is_from_me", 0),
        is_bot_message=fields.pop("is_bot_message", 0),
        **fields,
    )


def test_insert_is_idempotent_and_seq_is_global_and_monotonic(engine: Engine) -> None:
    with write_tx(engine) as conn:
        assert put(conn, "m1") == 1
        assert put(conn, "m1") is None  # the same (id, chat) again changes nothing
        assert put(conn, "m1", chat="fake:b") == 2  # ids are unique per chat
        assert put(conn, "m2") == 3
        assert messages.max_seq(conn, "fake:a") == 3
        assert messages.max_seq(conn, "fake:b") == 2
        assert messages.max_seq(conn, "fake:none") == 0


def test_cursor_queries_skip_bot_and_empty_messages(engine: Engine) -> None:
    with write_tx(engine) as conn:
        put(conn, "m1", content="one")
        put(conn, "m2", content="Andy: a reply")
        put(conn, "m3", content="three")
        put(conn, "m4", content="flagged", is_bot_message=1)
        put(conn, "m5", content="")
        put(conn, "m6", content="andy: lower-case prefix is a bot message too")
        put(conn, "m7", content="seven")
    with read_tx(engine) as conn:
        assert [m.id for m in messages.messages_after(conn, "fake:a", 0, "Andy")] == ["m1", "m3", "m7"]
        assert [m.id for m in messages.messages_after(conn, "fake:a", 3, "Andy")] == ["m7"]
        batch, total = messages.newest_after(conn, "fake:a", 0, "Andy", 2)
        assert ([m.id for m in batch], total) == (["m3", "m7"], 3)  # newest N, oldest first
        assert messages.last_bot_seq(conn, "fake:a", "Andy") == 6


def test_like_wildcards_in_the_assistant_name_are_literal(engine: Engine) -> None:
    with write_tx(engine) as conn:
        put(conn, "m1", content="A_x: looks like a prefix")
        put(conn, "m2", content="A_: is one")
    with read_tx(engine) as conn:
        assert [m.id for m in messages.messages_after(conn, "fake:a", 0, "A_")] == ["m1"]


def test_chat_upsert_keeps_the_newest_time_and_a_given_name(engine: Engine) -> None:
    with write_tx(engine) as conn:
        messages.upsert_chat(conn, "fake:a", "2026-01-02", name="Team", channel="fake", is_group=True)
        messages.upsert_chat(conn, "fake:a", "2026-01-01")  # older, nameless
        (chat,) = messages.get_all_chats(conn)
    assert chat == messages.ChatRow("fake:a", "Team", "2026-01-02", "fake", True)


def test_upsert_message_keeps_its_seq_and_clears_stale_reply_fields(engine: Engine) -> None:
    fields = {"id": "m1", "chat_jid": "fake:a", "content": "v1", "reply_to_message_id": "m0"}
    with write_tx(engine) as conn:
        seq = messages.upsert_message(conn, **fields)
        put(conn, "m2")
        assert messages.upsert_message(conn, id="m1", chat_jid="fake:a", content="v2") == seq
        (row,) = messages.messages_after(conn, "fake:a", seq - 1, "Andy")[:1]
    assert (row.content, row.reply_to_message_id) == ("v2", None)


def test_new_messages_spans_chats_and_returns_the_new_cursor(engine: Engine) -> None:
    with write_tx(engine) as conn:
        put(conn, "a1", chat="fake:a")
        put(conn, "b1", chat="fake:b")
        put(conn, "c1", chat="fake:c")
        put(conn, "a2", chat="fake:a")
    with read_tx(engine) as conn:
        rows, cursor = messages.new_messages(conn, ["fake:a", "fake:b"], 0, "Andy")
        assert ([m.id for m in rows], cursor) == (["a1", "b1", "a2"], 4)
        assert messages.new_messages(conn, [], 2, "Andy") == ([], 2)
        assert messages.new_messages(conn, ["fake:a"], 4, "Andy") == ([], 4)


def test_group_sync_time_lives_in_a_sentinel_chat(engine: Engine) -> None:
    with write_tx(engine) as conn:
        assert messages.get_last_group_sync(conn) is None
        messages.set_last_group_sync(conn, now_iso="2026-01-01T00:00:00.000Z")
        messages.set_last_group_sync(conn, now_iso="2026-01-02T00:00:00.000Z")
        assert messages.get_last_group_sync(conn) == "2026-01-02T00:00:00.000Z"
        messages.update_chat_name(conn, "fake:a", "Renamed", now_iso="2026-01-03T00:00:00.000Z")
        assert {c.jid: c.name for c in messages.get_all_chats(conn)}["fake:a"] == "Renamed"
