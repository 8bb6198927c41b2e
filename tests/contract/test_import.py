"""Issue 3 §8 and contract §5: importing NanoClaw v1 stores of the old and the new column sets.

The NanoClaw databases are built here with NanoClaw's own CREATE/ALTER statements (src/db.ts):
``OLD`` is a store from before any column migration, ``NEW`` one where every migration ran.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from microclaw.agent.loop import AgentResult
from microclaw.importer.nanoclaw import (
    NanoClawImportError,
    copy_group_folders,
    import_nanoclaw,
    iso_to_ms,
    jid_channel,
)
from microclaw.pipeline.inbound import ingest
from microclaw.pipeline.router import process_group
from microclaw.store import groups
from microclaw.store.db import read_tx, write_tx
from microclaw.store.models import Base
from tests.conftest import base_env
from tests.helpers import envelope, router_deps

BIN = Path(sys.executable).parent

CREATE = """
CREATE TABLE chats (jid TEXT PRIMARY KEY, name TEXT, last_message_time TEXT{chat_cols});
CREATE TABLE messages (id TEXT, chat_jid TEXT, sender TEXT, sender_name TEXT, content TEXT, timestamp TEXT,
  is_from_me INTEGER{msg_cols}, PRIMARY KEY (id, chat_jid), FOREIGN KEY (chat_jid) REFERENCES chats(jid));
CREATE INDEX idx_timestamp ON messages(timestamp);
CREATE TABLE scheduled_tasks (id TEXT PRIMARY KEY, group_folder TEXT NOT NULL, chat_jid TEXT NOT NULL,
  prompt TEXT NOT NULL, schedule_type TEXT NOT NULL, schedule_value TEXT NOT NULL, next_run TEXT,
  last_run TEXT, last_result TEXT, status TEXT DEFAULT 'active', created_at TEXT NOT NULL);
CREATE INDEX idx_next_run ON scheduled_tasks(next_run);
CREATE INDEX idx_status ON scheduled_tasks(status);
CREATE TABLE task_run_logs (id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, run_at TEXT NOT NULL,
  duration_ms INTEGER NOT NULL, status TEXT NOT NULL, result TEXT, error TEXT,
  FOREIGN KEY (task_id) REFERENCES scheduled_tasks(id));
CREATE INDEX idx_task_run_logs ON task_run_logs(task_id, run_at);
CREATE TABLE router_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sessions (group_folder TEXT PRIMARY KEY, session_id TEXT NOT NULL);
CREATE TABLE registered_groups (jid TEXT PRIMARY KEY, name TEXT NOT NULL, folder TEXT NOT NULL UNIQUE,
  trigger_pattern TEXT NOT NULL, added_at TEXT NOT NULL, container_config TEXT,
  requires_trigger INTEGER DEFAULT 1);
"""
# The migrations of contract §5.2, in order (is_bot_message and channel/is_group are in CREATE on new stores).
MIGRATIONS = """
ALTER TABLE scheduled_tasks ADD COLUMN context_mode TEXT DEFAULT 'isolated';
ALTER TABLE scheduled_tasks ADD COLUMN script TEXT;
ALTER TABLE registered_groups ADD COLUMN is_main INTEGER DEFAULT 0;
ALTER TABLE messages ADD COLUMN reply_to_message_id TEXT;
ALTER TABLE messages ADD COLUMN reply_to_message_content TEXT;
ALTER TABLE messages ADD COLUMN reply_to_sender_name TEXT;
"""

WA_GROUP, WA_DM, DISCORD, TG, SLACK = (
    "120363@g.us",
    "4917@s.whatsapp.net",
    "dc:42",
    "tg:-1001234567890",
    "slack:C1",
)
MAIN_TS = [  # (id, timestamp, content, sender) in the main chat, inserted out of timestamp order
    ("m3", "2024-01-01T10:03:00.000Z", "third", "u1"),
    ("m1", "2024-01-01T10:01:00.000Z", "first", "u1"),
    ("m2", "2024-01-01T10:02:00.000Z", "Andy: a bot reply", "bot"),
    ("m4", "2024-01-01T10:04:00.000Z", "andy: lower-case prefix", "u2"),
    ("m5", "2024-01-01T10:05:00.000Z", "fifth, says Andy: hi", "u1"),
    ("m2b", "2024-01-01T10:02:00.000Z", "same time as m2", "u2"),
]


def build_store(path: Path, *, new: bool) -> Path:
    """A NanoClaw store with two chats' worth of history, groups, tasks, logs, sessions, cursors."""
    conn = sqlite3.connect(path)
    conn.executescript(
        CREATE.format(
            chat_cols=", channel TEXT, is_group INTEGER DEFAULT 0" if new else "",
            msg_cols=", is_bot_message INTEGER DEFAULT 0" if new else "",
        )
    )
    if new:
        conn.executescript(MIGRATIONS)
    for jid, name in [(WA_GROUP, "Family"), (WA_DM, "Me"), (DISCORD, "dev"), (TG, "tg group"), (SLACK, None)]:
        if new:
            conn.execute(
                "INSERT INTO chats VALUES (?, ?, ?, ?, ?)",
                (jid, name, "2024-01-01T10:05:00.000Z", "stored-channel", 1),
            )
        else:
            conn.execute("INSERT INTO chats VALUES (?, ?, ?)", (jid, name, "2024-01-01T10:05:00.000Z"))
    for mid, ts, content, sender in MAIN_TS:
        cols = "id, chat_jid, sender, sender_name, content, timestamp, is_from_me"
        values: tuple = (mid, WA_DM, sender, sender.upper(), content, ts, 1 if sender == "bot" else 0)
        if new:
            cols += ", is_bot_message, reply_to_message_id, reply_to_message_content, reply_to_sender_name"
            reply = ("m1", "first", "U1") if mid == "m3" else (None, None, None)
            values += (1 if sender == "bot" else 0, *reply)
        conn.execute(f"INSERT INTO messages ({cols}) VALUES ({', '.join('?' * len(values))})", values)
    for i in range(3):
        conn.execute(
            "INSERT INTO messages (id, chat_jid, sender, sender_name, content, timestamp, is_from_me)"
            " VALUES (?, ?, 'u9', 'U9', ?, ?, 0)",
            (f"g{i}", WA_GROUP, f"group message {i}", f"2024-01-02T09:00:0{i}.000Z"),
        )
    groups_rows = [
        (WA_DM, "Me", "main", "@Andy", "2024-01-01T00:00:00.000Z", None, 1),
        (
            WA_GROUP,
            "Family",
            "whatsapp_family",
            "@Andy",
            "2024-01-01T00:00:01.000Z",
            json.dumps({"timeout": 60000}),
            0,
        ),
        (DISCORD, "dev", "discord_dev", "@Claw", "2024-01-01T00:00:02.000Z", None, None),
        (TG, "bad", "../escape", "@Andy", "2024-01-01T00:00:03.000Z", None, 1),
    ]
    for row in groups_rows:
        if new:
            conn.execute(
                "INSERT INTO registered_groups VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, 1 if row[2] == "discord_dev" else 0),
            )
        else:
            conn.execute("INSERT INTO registered_groups VALUES (?, ?, ?, ?, ?, ?, ?)", row)
    task = (
        "t1",
        "main",
        WA_DM,
        "daily summary",
        "cron",
        "0 9 * * *",
        "2024-01-02T09:00:00.000Z",
        None,
        None,
        "active",
        "2024-01-01T00:00:00.000Z",
    )
    task2 = (
        "t2",
        "whatsapp_family",
        WA_GROUP,
        "once",
        "once",
        "2024-01-01T12:00:00",
        None,
        "2024-01-01T12:00:00.500Z",
        "Completed",
        "completed",
        "2024-01-01T00:00:05.000Z",
    )
    if new:
        conn.execute(
            "INSERT INTO scheduled_tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", (*task, "group", "echo hi")
        )
        conn.execute(
            "INSERT INTO scheduled_tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", (*task2, "isolated", None)
        )
    else:
        conn.execute("INSERT INTO scheduled_tasks VALUES (?,?,?,?,?,?,?,?,?,?,?)", task)
        conn.execute("INSERT INTO scheduled_tasks VALUES (?,?,?,?,?,?,?,?,?,?,?)", task2)
    logs = [
        ("t2", "2024-01-01T12:00:00.500Z", 1200, "success", None, None),
        ("t1", "2024-01-01T09:00:00.100Z", 800, "error", None, "timed out"),
        ("t1", "2024-01-01T09:00:00.100Z", 800, "error", None, "timed out"),  # an identical twin
        ("gone", "2024-01-01T09:00:00.100Z", 5, "success", "x", None),  # its task was deleted by hand
    ]
    conn.executemany(
        "INSERT INTO task_run_logs (task_id, run_at, duration_ms, status, result, error)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        logs,
    )
    conn.executemany(
        "INSERT INTO sessions VALUES (?, ?)", [("main", "sess-main"), ("whatsapp_family", "sess-fam")]
    )
    conn.execute("INSERT INTO router_state VALUES ('last_timestamp', '2024-01-02T09:00:01.000Z')")
    conn.execute(
        "INSERT INTO router_state VALUES ('last_agent_timestamp', ?)",
        (json.dumps({WA_DM: "2024-01-01T10:02:00.000Z", DISCORD: "2023-01-01T00:00:00.000Z", TG: ""}),),
    )
    conn.commit()
    conn.close()
    return path


def dump(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every table, for "nothing changed" comparisons."""
    with read_tx(engine) as conn:
        return {
            t.name: sorted((tuple(r) for r in conn.execute(select(t))), key=repr)
            for t in Base.metadata.sorted_tables
        }


def rows(engine: Engine, sql: str) -> list[tuple]:
    with read_tx(engine) as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def counts(report) -> dict[str, tuple[int, int, int, int, int]]:
    return {
        name: (c.in_source, c.imported, c.already_present, c.updated, c.skipped)
        for name, c in report.counts.items()
    }


@pytest.fixture(params=["old", "new"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, bool]:
    new = request.param == "new"
    return build_store(tmp_path / f"{request.param}-messages.db", new=new), new


# --- what lands in each table ------------------------------------------------------------------


def test_first_import_counts(store, engine) -> None:
    path, _new = store
    report = import_nanoclaw(path, engine, assistant_name="Andy")
    assert counts(report) == {
        "chats": (5, 5, 0, 0, 0),
        "messages": (9, 9, 0, 0, 0),
        "registered_groups": (4, 3, 0, 0, 1),
        "scheduled_tasks": (2, 2, 0, 0, 0),
        "task_run_logs": (4, 3, 0, 0, 1),
        "sessions": (2, 2, 0, 0, 0),
        "group_state": (4, 2, 0, 0, 2),
    }
    assert any("../escape" in w and "invalid folder" in w for w in report.warnings)
    assert any("gone" in w for w in report.warnings)


def test_messages_get_seq_in_timestamp_order_and_keep_ids(store, engine) -> None:
    path, new = store
    import_nanoclaw(path, engine, assistant_name="Andy")
    got = rows(
        engine,
        f"SELECT seq, id, content, is_bot_message, received_at_ms, reply_to_message_id, reply_to_sender_name"
        f" FROM messages WHERE chat_jid = '{WA_DM}' ORDER BY seq",
    )
    # Ties (m2, m2b at 10:02) keep NanoClaw's insertion order.
    assert [r[1] for r in got] == ["m1", "m2", "m2b", "m3", "m4", "m5"]
    assert [r[0] for r in got] == [1, 2, 3, 4, 5, 6]
    assert [r[4] for r in got] == [
        iso_to_ms(t)
        for t in [
            "2024-01-01T10:01:00Z",
            "2024-01-01T10:02:00Z",
            "2024-01-01T10:02:00Z",
            "2024-01-01T10:03:00Z",
            "2024-01-01T10:04:00Z",
            "2024-01-01T10:05:00Z",
        ]
    ]
    assert got[0][4] == 1704103260000
    if new:  # the stored flag is kept: only the bot's own row is marked
        assert [r[3] for r in got] == [0, 1, 0, 0, 0, 0]
        assert got[3][5:] == ("m1", "U1")
    else:  # backfill: content LIKE 'Andy:%', case-insensitive like SQLite's LIKE
        assert [r[3] for r in got] == [0, 1, 0, 0, 1, 0]
        assert all(r[5:] == (None, None) for r in got)
    group_seqs = rows(engine, f"SELECT seq FROM messages WHERE chat_jid = '{WA_GROUP}' ORDER BY seq")
    assert group_seqs == [(7,), (8,), (9,)]


def test_chats_channel_and_is_group(store, engine) -> None:
    path, new = store
    import_nanoclaw(path, engine, assistant_name="Andy")
    got = dict(
        (r[0], r[1:])
        for r in rows(engine, "SELECT jid, name, last_message_time, channel, is_group FROM chats")
    )
    if new:  # columns present: kept as stored, no backfill
        assert got[TG] == ("tg group", "2024-01-01T10:05:00.000Z", "stored-channel", 1)
    else:  # NanoClaw's migration 5 backfill by JID pattern; tg: is never a group
        assert {jid: v[2:] for jid, v in got.items()} == {
            WA_GROUP: ("whatsapp", 1),
            WA_DM: ("whatsapp", 0),
            DISCORD: ("discord", 1),
            TG: ("telegram", 0),
            SLACK: (None, 0),
        }
    assert got[SLACK][0] is None and got[WA_GROUP][0] == "Family"


def test_registered_groups_main_flag_triggers_and_config(store, engine) -> None:
    path, new = store
    import_nanoclaw(path, engine, assistant_name="Andy")
    got = {
        r[0]: r[1:]
        for r in rows(
            engine,
            "SELECT jid, folder, trigger_pattern, requires_trigger, is_main, container_config"
            " FROM registered_groups",
        )
    }
    assert set(got) == {WA_DM, WA_GROUP, DISCORD}  # the ../escape folder was skipped
    if new:  # is_main column present: it decides, the folder name does not
        assert (got[WA_DM][3], got[DISCORD][3], got[WA_GROUP][3]) == (0, 1, 0)
    else:  # legacy rule: the group whose folder is 'main' is the main group
        assert (got[WA_DM][3], got[DISCORD][3], got[WA_GROUP][3]) == (1, 0, 0)
    assert got[WA_GROUP][:3] == ("whatsapp_family", "@Andy", 0)
    assert json.loads(got[WA_GROUP][4]) == {"timeout": 60000}
    assert got[DISCORD][1:3] == ("@Claw", None)  # NULL stays NULL: read back as "required"
    with read_tx(engine) as conn:
        dev = groups.get_group(conn, DISCORD)
        fam = groups.get_group(conn, WA_GROUP)
    assert dev is not None and dev.requires_trigger is None and dev.trigger == "@Claw"
    assert fam is not None and fam.container_config == {"timeout": 60000} and fam.requires_trigger is False


def test_tasks_run_logs_and_sessions(store, engine) -> None:
    path, new = store
    import_nanoclaw(path, engine, assistant_name="Andy")
    tasks = {
        r[0]: r[1:]
        for r in rows(
            engine, "SELECT id, context_mode, script, status, next_run, last_result FROM scheduled_tasks"
        )
    }
    if new:
        assert tasks["t1"][:2] == ("group", "echo hi")
    else:  # migrations 1-2 defaults
        assert tasks["t1"][:2] == ("isolated", None)
    assert tasks["t1"][2:] == ("active", "2024-01-02T09:00:00.000Z", None)
    assert tasks["t2"] == ("isolated", None, "completed", None, "Completed")
    logs = rows(
        engine, "SELECT task_id, run_at, duration_ms, status, result, error FROM task_run_logs ORDER BY id"
    )
    assert logs == [
        ("t2", "2024-01-01T12:00:00.500Z", 1200, "success", None, None),
        ("t1", "2024-01-01T09:00:00.100Z", 800, "error", None, "timed out"),
        ("t1", "2024-01-01T09:00:00.100Z", 800, "error", None, "timed out"),
    ]
    assert rows(engine, "SELECT group_folder, session_id FROM sessions ORDER BY 1") == [
        ("main", "sess-main"),
        ("whatsapp_family", "sess-fam"),
    ]


def test_cursors_become_sequence_numbers(store, engine) -> None:
    path, _new = store
    import_nanoclaw(path, engine, assistant_name="Andy")
    state = {r[0]: r[1:] for r in rows(engine, "SELECT chat_jid, cursor_seq, seen_seq FROM group_state")}
    # WA_DM's cursor 10:02 covers m1, m2 and m2b (equal timestamp); the Discord cursor precedes every
    # message and the empty tg cursor means nothing consumed: no rows. The family group has no per-chat
    # cursor; NanoClaw's loop had looked at everything up to last_timestamp (g0, g1).
    assert state == {WA_DM: (3, 3), WA_GROUP: (0, 8)}


def test_router_continues_from_the_imported_cursor(tmp_path, engine) -> None:
    path = build_store(tmp_path / "nc.db", new=True)
    import_nanoclaw(path, engine, assistant_name="Andy")
    prompts: list[str] = []

    def agent(request, on_step):
        prompts.append(request.prompt)
        return AgentResult(text="ok")

    ingest(engine, envelope(WA_DM, "a new one", source="whatsapp"))
    assert process_group(router_deps(engine, tmp_path, agent=agent), WA_DM) == "drained"
    # discord_dev is main in the NEW store, so WA_DM needs a trigger: untriggered history stays context.
    assert prompts == []
    ingest(engine, envelope(WA_DM, "@Andy and now?", source="whatsapp"))
    process_group(router_deps(engine, tmp_path, agent=agent), WA_DM)
    assert len(prompts) == 1
    prompt = prompts[0]
    assert ">first</message>" not in prompt and "same time as m2" not in prompt  # at or before the cursor
    assert (
        prompt.index("third") < prompt.index("fifth") < prompt.index("a new one") < prompt.index("and now?")
    )
    assert "lower-case prefix" not in prompt  # bot filter: LIKE 'Andy:%' is case-insensitive


def test_a_store_with_only_the_first_tables_imports_what_it_has(tmp_path, engine) -> None:
    path = tmp_path / "oldest.db"
    conn = sqlite3.connect(path)
    conn.executescript(CREATE.split("CREATE TABLE scheduled_tasks")[0].format(chat_cols="", msg_cols=""))
    conn.execute("INSERT INTO chats VALUES ('dc:1', 'dev', '2024-01-01T00:00:00.000Z')")
    conn.execute(
        "INSERT INTO messages VALUES ('1', 'dc:1', 'u', 'U', 'Andy: hi', '2024-01-01T00:00:00.000Z', 0)"
    )
    conn.commit()
    conn.close()
    report = import_nanoclaw(path, engine, assistant_name="Andy")
    assert report.tables == ["chats", "messages"]
    assert counts(report)["messages"] == (1, 1, 0, 0, 0)
    assert all(c.in_source == 0 for name, c in report.counts.items() if name not in ("chats", "messages"))
    assert rows(engine, "SELECT is_bot_message FROM messages") == [(1,)]
    assert rows(engine, "SELECT channel, is_group FROM chats") == [("discord", 1)]


# --- idempotency and dry runs ----------------------------------------------------------------------


def test_second_run_adds_nothing_and_changes_nothing(store, engine) -> None:
    path, _new = store
    import_nanoclaw(path, engine, assistant_name="Andy")
    before = dump(engine)
    again = import_nanoclaw(path, engine, assistant_name="Andy")
    assert dump(engine) == before
    assert again.changed == 0
    assert counts(again) == {
        "chats": (5, 0, 5, 0, 0),
        "messages": (9, 0, 9, 0, 0),
        "registered_groups": (4, 0, 3, 0, 1),
        "scheduled_tasks": (2, 0, 2, 0, 0),
        "task_run_logs": (4, 0, 3, 0, 1),
        "sessions": (2, 0, 2, 0, 0),
        "group_state": (4, 0, 2, 0, 2),
    }


def test_dry_run_reports_the_same_counts_and_writes_nothing(store, engine) -> None:
    path, _new = store
    before = dump(engine)
    dry = import_nanoclaw(path, engine, assistant_name="Andy", dry_run=True)
    assert dump(engine) == before
    assert dry.dry_run and dry.changed > 0
    real = import_nanoclaw(path, engine, assistant_name="Andy")
    assert counts(dry) == counts(real)


def test_existing_rows_are_kept_and_cursors_never_move_back(tmp_path, engine) -> None:
    path = build_store(tmp_path / "nc.db", new=True)
    import_nanoclaw(path, engine, assistant_name="Andy")
    with write_tx(engine) as conn:
        conn.execute(text(f"UPDATE group_state SET cursor_seq = 6, seen_seq = 6 WHERE chat_jid = '{WA_DM}'"))
        conn.execute(text(f"UPDATE registered_groups SET trigger_pattern = '@Mine' WHERE jid = '{WA_GROUP}'"))
        conn.execute(text(f"UPDATE chats SET name = 'Renamed' WHERE jid = '{WA_GROUP}'"))
    before = dump(engine)
    report = import_nanoclaw(path, engine, assistant_name="Andy")
    assert report.changed == 0 and dump(engine) == before


def test_importing_into_a_chat_microclaw_already_knows(tmp_path, engine) -> None:
    """Imported history is ordered after our own messages, so it counts as already processed."""
    from tests.helpers import register

    register(engine, WA_DM, folder="wa_me", requires_trigger=False)
    ours = ingest(engine, envelope(WA_DM, "from microclaw", source="whatsapp"))
    path = build_store(tmp_path / "nc.db", new=True)
    report = import_nanoclaw(path, engine, assistant_name="Andy")
    assert any(WA_DM in w and "already had MicroClaw messages" in w for w in report.warnings)
    assert counts(report)["registered_groups"] == (4, 2, 1, 0, 1)
    state = rows(engine, f"SELECT cursor_seq, seen_seq FROM group_state WHERE chat_jid = '{WA_DM}'")
    newest = rows(engine, f"SELECT MAX(seq) FROM messages WHERE chat_jid = '{WA_DM}'")[0][0]
    assert ours.seq == 1 and state == [(newest, newest)]


# --- bad inputs -------------------------------------------------------------------------------------


def test_missing_path_is_a_clear_error(tmp_path, engine) -> None:
    with pytest.raises(NanoClawImportError, match="no such file"):
        import_nanoclaw(tmp_path / "nope.db", engine, assistant_name="Andy")


@pytest.mark.parametrize(
    "content", [b"", b"hello, I am a text file\n", b"SQLite format 2\x00" + b"\x00" * 100]
)
def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path, engine, content: bytes) -> None:
    path = tmp_path / "messages.db"
    path.write_bytes(content)
    with pytest.raises(NanoClawImportError, match="not an SQLite database"):
        import_nanoclaw(path, engine, assistant_name="Andy")


def test_sqlite_without_nanoclaw_tables_is_a_clear_error(tmp_path, engine) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(NanoClawImportError, match=r"not a NanoClaw store.*tables found: notes"):
        import_nanoclaw(path, engine, assistant_name="Andy")
    before = dump(engine)
    assert all(not v for k, v in before.items() if k != "alembic_version")


def test_a_nanoclaw_project_directory_is_accepted(tmp_path, engine) -> None:
    (tmp_path / "nanoclaw" / "store").mkdir(parents=True)
    build_store(tmp_path / "nanoclaw" / "store" / "messages.db", new=True)
    assert (
        import_nanoclaw(tmp_path / "nanoclaw", engine, assistant_name="Andy").counts["messages"].imported == 9
    )
    with pytest.raises(NanoClawImportError, match="not a file"):
        import_nanoclaw(tmp_path, engine, assistant_name="Andy")


def test_the_source_is_opened_read_only(tmp_path, engine) -> None:
    path = build_store(tmp_path / "nc.db", new=False)
    path.chmod(0o444)
    before = path.read_bytes()
    import_nanoclaw(path, engine, assistant_name="Andy")
    assert path.read_bytes() == before


# --- group folders ------------------------------------------------------------------------------


def test_group_folders_are_copied_without_overwriting(tmp_path) -> None:
    src, dst = tmp_path / "nc-groups", tmp_path / "ours"
    (src / "main" / "logs").mkdir(parents=True)
    (src / "main" / "CLAUDE.md").write_text("# Andy\nmain memory")
    (src / "main" / "logs" / "run.log").write_text("log")
    (src / "global").mkdir()
    (src / "global" / "CLAUDE.md").write_text("shared")
    (src / "unregistered").mkdir()
    (src / "unregistered" / "CLAUDE.md").write_text("not copied")
    (src / "main" / "link").symlink_to(tmp_path)
    (dst / "main").mkdir(parents=True)
    (dst / "main" / "CLAUDE.md").write_text("mine")

    dry = copy_group_folders(src, dst, ["main"], dry_run=True)
    assert not (dst / "global").exists()
    result = copy_group_folders(src, dst, ["main"])
    assert (dry.in_source, dry.imported, dry.already_present, dry.skipped) == (4, 2, 1, 1)
    assert (result.in_source, result.imported, result.already_present, result.skipped) == (4, 2, 1, 1)
    assert (dst / "main" / "CLAUDE.md").read_text() == "mine"
    assert (dst / "main" / "logs" / "run.log").read_text() == "log"
    assert (dst / "global" / "CLAUDE.md").read_text() == "shared"
    assert not (dst / "unregistered").exists() and not (dst / "main" / "link").exists()
    again = copy_group_folders(src, dst, ["main"])
    assert (again.imported, again.already_present) == (0, 3)


def _planted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A NanoClaw groups/ to import, our groups/ with links planted in it, and where they point."""
    src, dst, outside = tmp_path / "nc-groups", tmp_path / "ours", tmp_path / "outside"
    (src / "main" / "logs").mkdir(parents=True)
    (src / "main" / "CLAUDE.md").write_text("main memory")
    (src / "main" / "logs" / "run.log").write_text("log")
    (src / "team").mkdir()
    (src / "team" / "CLAUDE.md").write_text("team memory")
    outside.mkdir()
    (dst / "main").mkdir(parents=True)
    (dst / "main" / "logs").symlink_to(outside)  # an intermediate component of main/logs/run.log
    (dst / "team").symlink_to(outside)  # the group folder itself
    return src, dst, outside


@pytest.mark.parametrize("dry_run", [False, True])
def test_group_files_are_never_copied_through_a_linked_destination_folder(tmp_path, dry_run: bool) -> None:
    src, dst, outside = _planted(tmp_path)
    refused: list[tuple[str, str, str]] = []
    result = copy_group_folders(
        src,
        dst,
        ["main", "team"],
        dry_run=dry_run,
        on_refused=lambda folder, exc: refused.append((folder, exc.path, exc.problem)),
    )
    assert list(outside.iterdir()) == []
    assert (result.in_source, result.imported, result.skipped) == (3, 1, 2)
    assert refused == [
        ("main", "main/logs", "is a symbolic link"),
        ("team", "team", "is a symbolic link"),
    ]
    assert (dst / "main" / "CLAUDE.md").exists() is not dry_run  # the safe part still copies


def test_source_links_and_special_files_are_skipped_without_blocking(tmp_path) -> None:
    src, dst, outside = tmp_path / "nc-groups", tmp_path / "ours", tmp_path / "outside"
    (src / "main" / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    os.mkfifo(src / "main" / "pipe")  # no writer: opening it for reading would block
    (src / "main" / "sub" / "up").symlink_to(outside)
    (src / "main" / "sub" / "leak.md").symlink_to(outside / "secret")
    (src / "main" / "ok.md").write_text("fine")
    result = copy_group_folders(src, dst, ["main"])
    assert (result.in_source, result.imported, result.skipped) == (4, 1, 3)
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == ["main", "main/ok.md"]


def test_cli_refuses_a_linked_destination_folder_clearly_and_audits_it(tmp_path) -> None:
    env = base_env(tmp_path)
    store_path = build_store(tmp_path / "messages.db", new=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    nc_groups = tmp_path / "nc-groups"
    (nc_groups / "main" / "notes").mkdir(parents=True)
    (nc_groups / "main" / "notes" / "todo.md").write_text("buy milk")
    ours = tmp_path / "data" / "groups"
    (ours / "main").mkdir(parents=True)
    (ours / "main" / "notes").symlink_to(outside)

    result = _cli([str(store_path), "--groups-dir", str(nc_groups)], env, tmp_path)

    assert result.returncode == 1
    stderr = " ".join(result.stderr.split())
    assert f"not copied: {ours / 'main' / 'notes'} is a symbolic link" in stderr
    assert "nothing was written through it" in stderr
    assert list(outside.iterdir()) == []
    assert table_row(result.stdout, "files") == ["files", "1", "0", "0", "0", "1"]
    db = sqlite3.connect(tmp_path / "data" / "microclaw.db")
    try:
        rows = db.execute("SELECT decision, detail FROM audit_log WHERE kind = 'fs.refused'").fetchall()
    finally:
        db.close()
    assert [(d, json.loads(detail)) for d, detail in rows] == [
        ("deny", {"group": "main", "use": "import", "path": "main/notes", "problem": "is a symbolic link"})
    ]


def test_jid_channel_backfill_rules() -> None:
    assert jid_channel("1@g.us") == ("whatsapp", 1)
    assert jid_channel("1@s.whatsapp.net") == ("whatsapp", 0)
    assert jid_channel("dc:1") == ("discord", 1)
    assert jid_channel("tg:-100") == ("telegram", 0)
    assert jid_channel("tg:5") == ("telegram", 0)
    assert jid_channel("emacs:default") == (None, 0)


# --- the command line ----------------------------------------------------------------------------


def table_row(output: str, name: str) -> list[str]:
    """The cells of the rich table row whose first cell is ``name``."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no {name!r} row in:\n{output}")


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "microclaw"), "import-nanoclaw", *args],
        env={**env, "COLUMNS": "200"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_imports_copies_folders_and_is_idempotent(tmp_path) -> None:
    env = base_env(tmp_path)
    store_path = build_store(tmp_path / "messages.db", new=False)
    nc_groups = tmp_path / "nc-groups"
    (nc_groups / "main").mkdir(parents=True)
    (nc_groups / "main" / "CLAUDE.md").write_text("remember this")

    dry = _cli([str(store_path), "--groups-dir", str(nc_groups), "--dry-run"], env, tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was written" in dry.stdout
    assert not (tmp_path / "data" / "microclaw.db").exists()
    assert not (tmp_path / "data" / "groups" / "main").exists()

    first = _cli([str(store_path), "--groups-dir", str(nc_groups)], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert table_row(first.stdout, "messages") == ["messages", "9", "9", "0", "0", "0"]
    assert table_row(first.stdout, "files") == ["files", "1", "1", "0", "0", "0"]
    assert "older NanoClaw schema" in first.stdout and "is_bot_message" in first.stdout
    assert "invalid folder" in first.stderr
    assert (tmp_path / "data" / "groups" / "main" / "CLAUDE.md").read_text() == "remember this"

    second = _cli([str(store_path), "--groups-dir", str(nc_groups)], env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "0 new or updated rows (already up to date)" in second.stdout
    assert table_row(second.stdout, "messages") == ["messages", "9", "0", "9", "0", "0"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.db", "no such file"),
        (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "not an SQLite database"),
    ],
)
def test_cli_bad_input_exits_non_zero_naming_the_problem(tmp_path, make, message: str) -> None:
    path = make(tmp_path)
    result = _cli([str(path)], base_env(tmp_path), tmp_path)
    assert result.returncode == 1
    assert message in result.stderr and str(path) in result.stderr.replace("\n", "")


# --- hostile stores (security) -------------------------------------------------------------------


def _add_task(
    path: Path, task_id: str, folder: str, chat: str, kind: str, value: str, next_run: object
) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO scheduled_tasks (id, group_folder, chat_jid, prompt, schedule_type, schedule_value,"
        " next_run, status, created_at) VALUES (?, ?, ?, 'p', ?, ?, ?, 'active', '2024-01-01T00:00:00.000Z')",
        (task_id, folder, chat, kind, value, next_run),
    )
    conn.commit()
    conn.close()


def app_db_rows(tmp_path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(tmp_path / "data" / "microclaw.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_cli_refuses_hostile_task_rows_and_imports_the_rest(tmp_path) -> None:
    store_path = build_store(tmp_path / "messages.db", new=True)
    due = "2024-06-01T00:00:00.000Z"
    # main's folder paired with another group's chat, and with a chat nobody registered
    _add_task(store_path, "hijack", "main", WA_GROUP, "interval", "3600000", due)
    _add_task(store_path, "stray", "main", "tg:666", "interval", "3600000", due)
    # ~10,000 years: the first tick would overflow; a "time" that sorts as always due
    _add_task(store_path, "overflow", "whatsapp_family", WA_GROUP, "interval", "315537897600000", due)
    _add_task(store_path, "garbage", "whatsapp_family", WA_GROUP, "interval", "60000", "0000-bogus")
    _add_task(store_path, "blob", "whatsapp_family", WA_GROUP, "interval", "60000", 5)
    _add_task(store_path, "nocron", "whatsapp_family", WA_GROUP, "cron", "not a cron", due)
    env = base_env(tmp_path)
    result = _cli([str(store_path)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert table_row(result.stdout, "scheduled_tasks") == ["scheduled_tasks", "8", "2", "0", "0", "6"]
    stderr = " ".join(result.stderr.split())
    assert "'hijack' skipped: its chat '120363@g.us' is not the chat registered to folder 'main'" in stderr
    assert "'stray' skipped" in stderr and "not a registered group" in stderr
    assert "'overflow' skipped" in stderr and "past the year 9999" in stderr
    for bad in ("garbage", "blob", "nocron"):
        assert f"'{bad}' skipped" in stderr
    assert sorted(app_db_rows(tmp_path, "SELECT id FROM scheduled_tasks")) == [("t1",), ("t2",)]

    # The imported tasks leave the scheduler working.
    from microclaw.store.db import create_sqlite_engine

    engine = create_sqlite_engine(tmp_path / "data" / "microclaw.db")
    try:
        from microclaw.scheduler.tick import claim_due_tasks

        assert claim_due_tasks(engine, timezone="UTC") == [WA_DM]
    finally:
        engine.dispose()


def test_sessions_of_folders_no_group_is_registered_with_are_skipped(tmp_path, engine) -> None:
    path = build_store(tmp_path / "messages.db", new=True)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO sessions VALUES ('nobody_here', 'sess-x')")
    conn.commit()
    conn.close()
    report = import_nanoclaw(path, engine, assistant_name="Andy")
    assert counts(report)["sessions"] == (3, 2, 0, 0, 1)
    assert any("'nobody_here'" in w and "no group is registered" in w for w in report.warnings)


def _corrupt(p: Path) -> Path:
    path = build_store(p / "corrupt.db", new=True)
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # the header and schema page survive, the tables do not
    path.write_bytes(bytes(data))
    return path


def _missing_columns(p: Path) -> Path:
    path = p / "odd.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE chats (jid TEXT); CREATE TABLE messages (id TEXT, chat_jid TEXT);"
        "CREATE TABLE task_run_logs (x TEXT); INSERT INTO chats VALUES ('a');"
    )
    conn.close()
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_corrupt, "unreadable SQLite database"),
        (_missing_columns, "not a NanoClaw store this importer understands"),
    ],
)
def test_cli_unreadable_stores_are_one_clear_line_and_write_nothing(tmp_path, make, message: str) -> None:
    env = base_env(tmp_path)
    first = _cli([str(build_store(tmp_path / "ok.db", new=False))], env, tmp_path)
    assert first.returncode == 0, first.stderr
    before = app_db_rows(tmp_path, "SELECT count(*) FROM messages")
    result = _cli([str(make(tmp_path))], env, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert message in result.stderr and "nothing was imported" in result.stderr
    assert app_db_rows(tmp_path, "SELECT count(*) FROM messages") == before


def test_cli_a_locked_store_is_a_clear_error(tmp_path) -> None:
    path = build_store(tmp_path / "messages.db", new=True)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # NanoClaw in the middle of a write, in another process
    try:
        result = _cli([str(path)], base_env(tmp_path), tmp_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "locked" in result.stderr and "stop NanoClaw" in " ".join(result.stderr.split())
