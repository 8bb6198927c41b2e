"""Contract §5.3 and checklist 11.12: the store's semantics, on a real SQLite file.

Message upserts by (id, chat), chat metadata upserts, the bot filter, "newest N in chronological
order" limits, task CRUD with run-log cleanup, and registered-group storage quirks. Cursors are
MicroClaw sequence numbers where NanoClaw compared timestamps (a deliberate improvement).
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, select, text

from microclaw.store import groups, messages, tasks
from microclaw.store.db import read_tx, write_tx
from microclaw.store.models import Message, RegisteredGroup, TaskRunLog

_M = Message.__table__


def store(conn, mid: str, chat: str = "tg:1", content: str | None = "hi", **fields) -> int | None:
    return messages.insert_message(
        conn,
        received_at_ms=1,
        id=mid,
        chat_jid=chat,
        sender="u1",
        sender_name="U1",
        content=content,
        timestamp=fields.pop("timestamp", f"2024-01-01T00:00:{len(mid):02d}.000Z"),
        is_from_me=fields.pop("is_from_me", 0),
        is_bot_message=fields.pop("is_bot_message", 0),
        **fields,
    )


def message_rows(engine: Engine, chat: str = "tg:1") -> list[tuple]:
    with read_tx(engine) as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(
                    _M.c.seq,
                    _M.c.id,
                    _M.c.content,
                    _M.c.is_from_me,
                    _M.c.reply_to_message_id,
                    _M.c.reply_to_message_content,
                    _M.c.reply_to_sender_name,
                )
                .where(_M.c.chat_jid == chat)
                .order_by(_M.c.seq)
            )
        ]


# --- storeMessage --------------------------------------------------------------------------------


def test_insert_keeps_the_first_copy_and_reports_the_duplicate(engine) -> None:
    with write_tx(engine) as conn:
        first = store(conn, "m1", content="original")
        again = store(conn, "m1", content="redelivered")
        other_chat = store(conn, "m1", chat="tg:2", content="same id, other chat")
    assert (first, again, other_chat) == (1, None, 2)
    assert message_rows(engine) == [(1, "m1", "original", 0, None, None, None)]


def test_upsert_overwrites_by_id_and_chat_and_keeps_the_seq(engine) -> None:
    with write_tx(engine) as conn:
        store(conn, "m0")
        seq = messages.upsert_message(
            conn,
            id="m1",
            chat_jid="tg:1",
            content="v1",
            timestamp="2024-01-01T00:00:01.000Z",
            is_from_me=True,
        )
        store(conn, "m2")
        again = messages.upsert_message(
            conn,
            id="m1",
            chat_jid="tg:1",
            content="v2",
            timestamp="2024-01-01T00:00:01.000Z",
            is_from_me=False,
        )
        elsewhere = messages.upsert_message(conn, id="m1", chat_jid="tg:2", content="other chat")
    assert (seq, again, elsewhere) == (2, 2, 4)
    assert [r[:4] for r in message_rows(engine)] == [
        (1, "m0", "hi", 0),
        (2, "m1", "v2", 0),
        (3, "m2", "hi", 0),
    ]
    assert [r[:3] for r in message_rows(engine, "tg:2")] == [(4, "m1", "other chat")]


def test_booleans_are_stored_as_0_and_1_and_missing_reply_fields_as_null(engine) -> None:
    with write_tx(engine) as conn:
        messages.upsert_message(
            conn, id="a", chat_jid="tg:1", content="x", is_from_me=True, is_bot_message=False
        )
        store(conn, "b", reply_to_message_id="a", reply_to_message_content="x", reply_to_sender_name="U1")
        raw = conn.execute(
            text("SELECT id, is_from_me, is_bot_message, typeof(is_from_me) FROM messages")
        ).all()
    assert sorted(tuple(r) for r in raw) == [("a", 1, 0, "integer"), ("b", 0, 0, "integer")]
    rows = message_rows(engine)
    assert rows[0][4:] == (None, None, None) and rows[1][4:] == ("a", "x", "U1")


def test_upsert_replaces_the_whole_row(engine) -> None:
    with write_tx(engine) as conn:
        messages.upsert_message(
            conn,
            id="m1",
            chat_jid="tg:1",
            content="quoting",
            reply_to_message_id="m0",
            reply_to_message_content="old",
            reply_to_sender_name="U0",
        )
        messages.upsert_message(conn, id="m1", chat_jid="tg:1", content="edited, no quote")
    assert message_rows(engine)[0][2:] == ("edited, no quote", 0, None, None, None)  # flags are 0/1


# --- storeChatMetadata, updateChatName, getAllChats -----------------------------------------------


def chat(engine: Engine, jid: str) -> tuple:
    with read_tx(engine) as conn:
        return tuple(
            conn.execute(
                text("SELECT name, last_message_time, channel, is_group FROM chats WHERE jid = :j"),
                {"j": jid},
            ).one()
        )


def test_chat_metadata_keeps_the_newer_time_and_coalesces_channel(engine) -> None:
    with write_tx(engine) as conn:
        messages.upsert_chat(conn, "tg:1", "2024-01-02T00:00:00.000Z")
    # A new row without a name is named after its jid; is_group unknown is NULL, as in NanoClaw.
    assert chat(engine, "tg:1") == ("tg:1", "2024-01-02T00:00:00.000Z", None, None)
    with write_tx(engine) as conn:
        messages.upsert_chat(
            conn, "tg:1", "2024-01-01T00:00:00.000Z", name="Team", channel="telegram", is_group=True
        )
    assert chat(engine, "tg:1") == ("Team", "2024-01-02T00:00:00.000Z", "telegram", 1)
    with write_tx(engine) as conn:  # no name, no channel: both preserved; time moves forward
        messages.upsert_chat(conn, "tg:1", "2024-01-03T00:00:00.000Z")
    assert chat(engine, "tg:1") == ("Team", "2024-01-03T00:00:00.000Z", "telegram", 1)
    with write_tx(engine) as conn:  # a given name overwrites; is_group=False is a value, not "unknown"
        messages.upsert_chat(conn, "tg:1", "2024-01-03T00:00:00.000Z", name="Renamed", is_group=False)
    assert chat(engine, "tg:1") == ("Renamed", "2024-01-03T00:00:00.000Z", "telegram", 0)


def test_update_chat_name_sets_only_the_name(engine) -> None:
    with write_tx(engine) as conn:
        messages.upsert_chat(conn, "tg:1", "2024-01-02T00:00:00.000Z", channel="telegram")
        messages.update_chat_name(conn, "tg:1", "Team", now_iso="2030-01-01T00:00:00.000Z")
        messages.update_chat_name(conn, "tg:new", "Fresh", now_iso="2030-01-01T00:00:00.000Z")
    assert chat(engine, "tg:1") == ("Team", "2024-01-02T00:00:00.000Z", "telegram", None)
    assert chat(engine, "tg:new") == ("Fresh", "2030-01-01T00:00:00.000Z", None, 0)


def test_all_chats_newest_activity_first_and_the_group_sync_sentinel(engine) -> None:
    with write_tx(engine) as conn:
        assert messages.get_last_group_sync(conn) is None
        messages.upsert_chat(conn, "a", "2024-01-02T00:00:00.000Z", name="A", is_group=True)
        messages.upsert_chat(conn, "b", "2024-01-03T00:00:00.000Z", name="B")
        messages.upsert_chat(conn, "c", "2024-01-01T00:00:00.000Z", name="C")
        messages.set_last_group_sync(conn, now_iso="2024-01-01T12:00:00.000Z")
        messages.set_last_group_sync(conn, now_iso="2024-01-02T12:00:00.000Z")
    with read_tx(engine) as conn:
        assert messages.get_last_group_sync(conn) == "2024-01-02T12:00:00.000Z"
        listed = messages.get_all_chats(conn)
    assert [c.jid for c in listed] == ["b", messages.GROUP_SYNC_JID, "a", "c"]
    assert listed[2] == messages.ChatRow("a", "A", "2024-01-02T00:00:00.000Z", None, True)


# --- the bot filter and limits -------------------------------------------------------------------


def test_bot_filter_excludes_flag_prefix_any_case_and_empty(engine) -> None:
    with write_tx(engine) as conn:
        store(conn, "1", content="hello")
        store(conn, "2", content="flagged", is_bot_message=1)
        store(conn, "3", content="Andy: a reply")
        store(conn, "4", content="andy: a user typing like the bot")  # LIKE is case-insensitive
        store(conn, "5", content="")
        store(conn, "6", content=None)
        store(conn, "7", content="Andy said: hi")
        store(conn, "8", content=" Andy: leading space")
        humans = messages.messages_after(conn, "tg:1", 0, "Andy")
        assert messages.last_bot_seq(conn, "tg:1", "Andy") == 4
    assert [m.id for m in humans] == ["1", "7", "8"]


def test_newest_n_since_a_cursor_come_back_in_chronological_order(engine) -> None:
    with write_tx(engine) as conn:
        for i in range(1, 8):
            store(conn, f"m{i}", content=f"text {i}")
        store(conn, "bot", content="Andy: reply")
        batch, total = messages.newest_after(conn, "tg:1", 2, "Andy", 3)
        everything, all_total = messages.newest_after(conn, "tg:1", 0, "Andy", 200)
        nothing, zero = messages.newest_after(conn, "tg:1", 8, "Andy", 3)
    assert [m.content for m in batch] == ["text 5", "text 6", "text 7"] and total == 5
    assert [m.seq for m in everything] == [1, 2, 3, 4, 5, 6, 7] and all_total == 7
    assert (nothing, zero) == ([], 0)


def test_new_messages_across_chats(engine) -> None:
    with write_tx(engine) as conn:
        store(conn, "a1", chat="tg:a")  # seq 1
        store(conn, "b1", chat="tg:b")  # 2
        store(conn, "c1", chat="tg:c")  # 3 (not asked for)
        store(conn, "a2", chat="tg:a", content="Andy: bot")  # 4 (bot)
        store(conn, "b2", chat="tg:b")  # 5
        store(conn, "a3", chat="tg:a")  # 6
        both, cursor = messages.new_messages(conn, ["tg:a", "tg:b"], 0, "Andy")
        newest_two, cursor2 = messages.new_messages(conn, ["tg:a", "tg:b"], 0, "Andy", limit=2)
        after, cursor3 = messages.new_messages(conn, ["tg:a", "tg:b"], 5, "Andy")
        none, same = messages.new_messages(conn, ["tg:a"], 6, "Andy")
        no_jids, kept = messages.new_messages(conn, [], 0, "Andy")
    assert [m.id for m in both] == ["a1", "b1", "b2", "a3"] and cursor == 6
    assert [m.id for m in newest_two] == ["b2", "a3"] and cursor2 == 6
    assert [m.id for m in after] == ["a3"] and cursor3 == 6
    assert (none, same) == ([], 6)
    assert (no_jids, kept) == ([], 0)


# --- tasks -----------------------------------------------------------------------------------------


def new_task(conn, task_id: str, **overrides) -> tasks.Task:
    fields = {
        "group_folder": "team",
        "chat_jid": "tg:1",
        "prompt": "p",
        "schedule_type": "interval",
        "schedule_value": "60000",
        "next_run": "2024-01-01T00:01:00.000Z",
        "created_at": "2024-01-01T00:00:00.000Z",
    }
    fields.update(overrides)
    return tasks.create_task(conn, id=task_id, **fields)


def test_create_task_defaults(engine) -> None:
    with write_tx(engine) as conn:
        plain = new_task(conn, "t1", script="")
        grouped = new_task(conn, "t2", context_mode="group", script="echo '{\"wakeAgent\": true}'")
        odd = new_task(conn, "t3", context_mode="shared")
    assert (plain.context_mode, plain.script, plain.status, plain.last_run, plain.last_result) == (
        "isolated",
        None,
        "active",
        None,
        None,
    )
    assert (grouped.context_mode, grouped.script) == ("group", "echo '{\"wakeAgent\": true}'")
    assert odd.context_mode == "isolated"


def test_update_task_is_partial_and_an_empty_patch_does_nothing(engine) -> None:
    with write_tx(engine) as conn:
        before = new_task(conn, "t1", script="echo hi")
        assert tasks.update_task(conn, "t1") is False
        assert tasks.get_task(conn, "t1") == before
        assert tasks.update_task(conn, "t1", prompt="new prompt") is True
        after = tasks.get_task(conn, "t1")
        assert after is not None and after.prompt == "new prompt"
        assert after.script == "echo hi" and after.schedule_value == "60000" and after.status == "active"
        tasks.update_task(conn, "t1", script="", status="paused", next_run=None)
        paused = tasks.get_task(conn, "t1")
        assert paused is not None and (paused.script, paused.status, paused.next_run) == (
            None,
            "paused",
            None,
        )
        assert tasks.update_task(conn, "missing", prompt="x") is False
        with pytest.raises(ValueError, match="group_folder"):
            tasks.update_task(conn, "t1", group_folder="other")


def test_delete_task_removes_its_run_logs_first(engine) -> None:
    with write_tx(engine) as conn:
        new_task(conn, "t1")
        new_task(conn, "t2")
        for task_id in ("t1", "t1", "t2"):
            tasks.log_task_run(
                conn, task_id=task_id, run_at="2024-01-01T00:01:00.000Z", duration_ms=5, status="success"
            )
        assert tasks.delete_task(conn, "t1") is True
        assert tasks.delete_task(conn, "t1") is False
        remaining = conn.execute(select(TaskRunLog.__table__.c.task_id)).scalars().all()
        assert tasks.get_task(conn, "t1") is None and remaining == ["t2"]
        with pytest.raises(ValueError, match="success"):
            tasks.log_task_run(conn, task_id="t2", run_at="x", duration_ms=1, status="done")


def test_task_lists_are_newest_created_first(engine) -> None:
    with write_tx(engine) as conn:
        new_task(conn, "old", created_at="2024-01-01T00:00:00.000Z")
        new_task(conn, "newest", created_at="2024-03-01T00:00:00.000Z", group_folder="other")
        new_task(conn, "middle", created_at="2024-02-01T00:00:00.000Z")
        tasks.log_task_run(
            conn,
            task_id="old",
            run_at="2024-01-02T00:00:00.000Z",
            duration_ms=7,
            status="error",
            error="boom",
        )
        tasks.log_task_run(
            conn,
            task_id="old",
            run_at="2024-01-01T00:00:00.000Z",
            duration_ms=3,
            status="success",
            result="ok",
        )
    with read_tx(engine) as conn:
        assert [t.id for t in tasks.get_all_tasks(conn)] == ["newest", "middle", "old"]
        assert [t.id for t in tasks.get_tasks_for_group(conn, "team")] == ["middle", "old"]
        logs = tasks.task_run_logs(conn, "old")
    assert [(r.run_at, r.duration_ms, r.status, r.result, r.error) for r in logs] == [
        ("2024-01-01T00:00:00.000Z", 3, "success", "ok", None),
        ("2024-01-02T00:00:00.000Z", 7, "error", None, "boom"),
    ]


# --- registered groups -----------------------------------------------------------------------------


def test_registered_group_storage_quirks(engine) -> None:
    with write_tx(engine) as conn:
        default = groups.register_group(conn, jid="tg:1", name="One", folder="tg_one", trigger="@Andy")
        off = groups.register_group(
            conn,
            jid="tg:2",
            name="Two",
            folder="tg_two",
            trigger="@C.L.A.U.D.E",
            requires_trigger=False,
            container_config={"timeout": 1000, "additionalMounts": []},
        )
        main = groups.register_group(
            conn, jid="tg:3", name="Main", folder="tg_main", trigger="@Andy", is_main=True
        )
        raw = {
            r[0]: tuple(r[1:])
            for r in conn.execute(
                text(
                    "SELECT jid, trigger_pattern, requires_trigger, is_main, container_config"
                    " FROM registered_groups"
                )
            )
        }
    assert raw["tg:1"] == ("@Andy", 1, 0, None)  # the plain trigger string, requires_trigger defaults to 1
    assert raw["tg:2"][:3] == ("@C.L.A.U.D.E", 0, 0)
    assert json.loads(raw["tg:2"][3]) == {"timeout": 1000, "additionalMounts": []}
    assert (default.requires_trigger, default.is_main, default.container_config) == (True, False, None)
    assert (off.requires_trigger, off.container_config) == (False, {"timeout": 1000, "additionalMounts": []})
    assert main.is_main is True


def test_invalid_folders_are_refused_on_write_and_skipped_on_read(engine) -> None:
    with write_tx(engine) as conn:
        for folder in ("global", "../x", "a b", ""):
            with pytest.raises(ValueError, match="invalid group folder"):
                groups.register_group(conn, jid="tg:bad", name="Bad", folder=folder, trigger="@Andy")
        groups.register_group(conn, jid="tg:ok", name="Ok", folder="ok", trigger="@Andy")
        conn.execute(
            RegisteredGroup.__table__.insert().values(
                jid="tg:sneaky",
                name="S",
                folder="Global",
                trigger_pattern="@Andy",
                added_at="x",
                requires_trigger=None,
                container_config="{not json",
            )
        )
        conn.execute(
            RegisteredGroup.__table__.insert().values(
                jid="tg:null",
                name="N",
                folder="nulls",
                trigger_pattern="@Andy",
                added_at="y",
                requires_trigger=None,
                is_main=None,
                container_config="{not json",
            )
        )
    with read_tx(engine) as conn:
        assert groups.get_group(conn, "tg:sneaky") is None
        assert [g.jid for g in groups.all_groups(conn)] == ["tg:ok", "tg:null"]  # by added_at
        nulls = groups.get_group(conn, "tg:null")
    assert nulls is not None
    assert (nulls.requires_trigger, nulls.is_main, nulls.container_config) == (None, False, None)


def test_re_registering_replaces_the_row(engine) -> None:
    with write_tx(engine) as conn:
        groups.register_group(conn, jid="tg:1", name="One", folder="one", trigger="@Andy", is_main=True)
        again = groups.register_group(conn, jid="tg:1", name="Uno", folder="uno", trigger="@Bot")
        count = conn.execute(text("SELECT COUNT(*) FROM registered_groups")).scalar_one()
    assert count == 1 and (again.name, again.folder, again.trigger, again.is_main) == (
        "Uno",
        "uno",
        "@Bot",
        False,
    )
