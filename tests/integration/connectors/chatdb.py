"""A Messages database (``chat.db``) in Apple's schema, written by the tests, and a stand-in
``osascript`` executable.

`ChatDbWriter` creates the tables Messages has (``message`` with its full column list as of
macOS 14/15, ``handle``, ``chat``, ``chat_message_join``, ``chat_handle_join``, ``attachment``,
``message_attachment_join``; Apple's triggers that call Messages' own SQL functions are left
out) in WAL mode, as Messages keeps it, and inserts rows the way Messages does: the message and
its chat link in one transaction, or the link later (``link=False``) to reproduce a reader
seeing a message before its chat. `attributed_body()` archives a string the way
``NSArchiver`` lays out an ``NSAttributedString`` (checked against real blobs in the unit tests).

`StandInOsascript` writes an executable that records its argv (as bytes, hex) and its stdin
script, and answers like osascript: exit 0, or ``execution error: … (-1728)`` on stderr with
exit 1 for the chats it is told Messages does not know.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

APPLE_EPOCH_S = 978_307_200

MESSAGE_COLUMNS = (
    "ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL, text TEXT,"
    " replace INTEGER DEFAULT 0, service_center TEXT, handle_id INTEGER DEFAULT 0, subject TEXT,"
    " country TEXT, attributedBody BLOB,"
    " version INTEGER DEFAULT 0, type INTEGER DEFAULT 0, service TEXT, account TEXT, account_guid TEXT,"
    " error INTEGER DEFAULT 0, date INTEGER, date_read INTEGER, date_delivered INTEGER,"
    " is_delivered INTEGER DEFAULT 0, is_finished INTEGER DEFAULT 0, is_emote INTEGER DEFAULT 0,"
    " is_from_me INTEGER DEFAULT 0, is_empty INTEGER DEFAULT 0, is_delayed INTEGER DEFAULT 0,"
    " is_auto_reply INTEGER DEFAULT 0, is_prepared INTEGER DEFAULT 0, is_read INTEGER DEFAULT 0,"
    " is_system_message INTEGER DEFAULT 0, is_sent INTEGER DEFAULT 0, has_dd_results INTEGER DEFAULT 0,"
    " is_service_message INTEGER DEFAULT 0, is_forward INTEGER DEFAULT 0, was_downgraded INTEGER DEFAULT 0,"
    " is_archive INTEGER DEFAULT 0, cache_has_attachments INTEGER DEFAULT 0, cache_roomnames TEXT,"
    " was_data_detected INTEGER DEFAULT 0, was_deduplicated INTEGER DEFAULT 0,"
    " is_audio_message INTEGER DEFAULT 0, is_played INTEGER DEFAULT 0, date_played INTEGER,"
    " item_type INTEGER DEFAULT 0, other_handle INTEGER DEFAULT 0, group_title TEXT,"
    " group_action_type INTEGER DEFAULT 0, share_status INTEGER DEFAULT 0, share_direction INTEGER DEFAULT 0,"
    " is_expirable INTEGER DEFAULT 0, expire_state INTEGER DEFAULT 0, message_action_type INTEGER DEFAULT 0,"
    " message_source INTEGER DEFAULT 0, associated_message_guid TEXT,"
    " associated_message_type INTEGER DEFAULT 0,"
    " balloon_bundle_id TEXT, payload_data BLOB, expressive_send_style_id TEXT,"
    " associated_message_range_location INTEGER DEFAULT 0, associated_message_range_length INTEGER DEFAULT 0,"
    " time_expressive_send_played INTEGER, message_summary_info BLOB, ck_sync_state INTEGER DEFAULT 0,"
    " ck_record_id TEXT, ck_record_change_tag TEXT, destination_caller_id TEXT, is_corrupt INTEGER DEFAULT 0,"
    " reply_to_guid TEXT, sort_id INTEGER, is_spam INTEGER DEFAULT 0, has_unseen_mention INTEGER DEFAULT 0,"
    " thread_originator_guid TEXT, thread_originator_part TEXT, syndication_ranges TEXT,"
    " synced_syndication_ranges TEXT, was_delivered_quietly INTEGER DEFAULT 0,"
    " did_notify_recipient INTEGER DEFAULT 0, date_retracted INTEGER DEFAULT 0,"
    " date_edited INTEGER DEFAULT 0,"
    " was_detonated INTEGER DEFAULT 0, part_count INTEGER, is_stewie INTEGER DEFAULT 0,"
    " is_kt_verified INTEGER DEFAULT 0"
)

SCHEMA = f"""
CREATE TABLE message ({MESSAGE_COLUMNS});
CREATE INDEX message_idx_date ON message(date);
CREATE INDEX message_idx_handle ON message(handle_id, date);
CREATE TABLE handle (ROWID INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE, id TEXT NOT NULL, country TEXT,
    service TEXT NOT NULL, uncanonicalized_id TEXT, person_centric_id TEXT, UNIQUE (id, service));
CREATE TABLE chat (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL, style INTEGER,
    state INTEGER, account_id TEXT, properties BLOB, chat_identifier TEXT, service_name TEXT, room_name TEXT,
    account_login TEXT, is_archived INTEGER DEFAULT 0, last_addressed_handle TEXT, display_name TEXT,
    group_id TEXT, is_filtered INTEGER DEFAULT 0, successful_query INTEGER, engram_id TEXT,
    server_change_token TEXT, ck_sync_state INTEGER DEFAULT 0, original_group_id TEXT,
    last_read_message_timestamp INTEGER DEFAULT 0, cloudkit_record_id TEXT, last_addressed_sim_id TEXT,
    is_blackholed INTEGER DEFAULT 0, syndication_date INTEGER DEFAULT 0, syndication_type INTEGER DEFAULT 0,
    is_recovered INTEGER DEFAULT 0);
CREATE TABLE chat_message_join (chat_id INTEGER REFERENCES chat (ROWID) ON DELETE CASCADE,
    message_id INTEGER REFERENCES message (ROWID) ON DELETE CASCADE, message_date INTEGER DEFAULT 0,
    PRIMARY KEY (chat_id, message_id));
CREATE INDEX chat_message_join_idx_message_id_only ON chat_message_join(message_id);
CREATE TRIGGER after_insert_on_chat_message_join AFTER INSERT ON chat_message_join BEGIN
    UPDATE message SET cache_roomnames = (SELECT group_concat(c.room_name) FROM chat c
        INNER JOIN chat_message_join j ON c.ROWID = j.chat_id WHERE j.message_id = NEW.message_id)
    WHERE message.ROWID = NEW.message_id; END;
CREATE TABLE chat_handle_join (chat_id INTEGER REFERENCES chat (ROWID) ON DELETE CASCADE,
    handle_id INTEGER REFERENCES handle (ROWID) ON DELETE CASCADE, UNIQUE(chat_id, handle_id));
CREATE TABLE attachment (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL,
    created_date INTEGER DEFAULT 0, start_date INTEGER DEFAULT 0, filename TEXT, uti TEXT, mime_type TEXT,
    transfer_state INTEGER DEFAULT 0, is_outgoing INTEGER DEFAULT 0, user_info BLOB, transfer_name TEXT,
    total_bytes INTEGER DEFAULT 0, is_sticker INTEGER DEFAULT 0, sticker_user_info BLOB,
    attribution_info BLOB, hide_attachment INTEGER DEFAULT 0, ck_sync_state INTEGER DEFAULT 0,
    ck_server_change_token_blob BLOB, ck_record_id TEXT, original_guid TEXT UNIQUE NOT NULL,
    is_commsafety_sensitive INTEGER DEFAULT 0);
CREATE TABLE message_attachment_join (message_id INTEGER REFERENCES message (ROWID) ON DELETE CASCADE,
    attachment_id INTEGER REFERENCES attachment (ROWID) ON DELETE CASCADE, UNIQUE(message_id, attachment_id));
"""

# NSArchiver's bytes up to the string: header, NSAttributedString < NSObject, NSString, "+" tag.
_BLOB_HEAD = bytes.fromhex(
    "040b73747265616d747970656481e803840140848484124e5341747472696275746564537472696e6700"
    "8484084e534f626a656374008592848484084e53537472696e67019484012b"
)


def _ts_int(value: int) -> bytes:
    if value < 0x80:
        return bytes([value])
    if value < 0x10000:
        return b"\x81" + value.to_bytes(2, "little")
    return b"\x82" + value.to_bytes(4, "little")


def attributed_body(text: str) -> bytes:
    """``text`` archived as an NSAttributedString with one attribute run, as Messages stores it."""
    data = text.encode("utf-8")
    utf16_len = len(text.encode("utf-16-le")) // 2
    tail = (
        b"\x86\x84\x02iI\x01"
        + _ts_int(utf16_len)
        + b"\x92\x84\x84\x84\x0cNSDictionary\x00\x94\x84\x01i\x00\x86\x86"
    )
    return _BLOB_HEAD + _ts_int(len(data)) + data + tail


def apple_ns(unix_s: float) -> int:
    """Unix seconds as ``message.date`` (nanoseconds since 2001-01-01)."""
    return int((unix_s - APPLE_EPOCH_S) * 1_000_000_000)


@dataclass(frozen=True)
class Written:
    rowid: int
    guid: str


class ChatDbWriter:
    """Plays Messages: owns chat.db and writes to it (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'message'").fetchone():
            self.db.executescript(SCHEMA)

    def handle(self, ident: str, service: str = "iMessage") -> int:
        with self._lock:
            cur = self.db.execute("INSERT INTO handle (id, service) VALUES (?, ?)", (ident, service))
            return int(cur.lastrowid or 0)

    def chat(self, guid: str, *, handles: list[int], display_name: str | None = None) -> int:
        service, kind, identifier = guid.split(";", 2)
        with self._lock:
            cur = self.db.execute(
                "INSERT INTO chat (guid, style, chat_identifier, service_name, display_name)"
                " VALUES (?, ?, ?, ?, ?)",
                (guid, 43 if kind == "+" else 45, identifier, service, display_name),
            )
            chat_id = int(cur.lastrowid or 0)
            self.db.executemany(
                "INSERT INTO chat_handle_join (chat_id, handle_id) VALUES (?, ?)",
                [(chat_id, h) for h in handles],
            )
            return chat_id

    def message(
        self,
        chat: int,
        *,
        text: str | None = None,
        body: bytes | None = None,
        handle: int = 0,
        is_from_me: bool = False,
        unix_s: float = 1_736_244_000.0,
        associated_type: int = 0,
        item_type: int = 0,
        attachments: tuple[str, ...] = (),
        thread_originator: str | None = None,
        link: bool = True,
    ) -> Written:
        """Insert one message (and, with ``link``, its chat link in the same transaction)."""
        guid = str(uuid.uuid4()).upper()
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            cur = self.db.execute(
                "INSERT INTO message (guid, text, attributedBody, handle_id, service, date, is_from_me,"
                " associated_message_type, item_type, cache_has_attachments, thread_originator_guid)"
                " VALUES (?, ?, ?, ?, 'iMessage', ?, ?, ?, ?, ?, ?)",
                (
                    guid,
                    text,
                    body,
                    handle,
                    apple_ns(unix_s),
                    int(is_from_me),
                    associated_type,
                    item_type,
                    int(bool(attachments)),
                    thread_originator,
                ),
            )
            rowid = int(cur.lastrowid or 0)
            for name in attachments:
                att = self.db.execute(
                    "INSERT INTO attachment (guid, original_guid, filename, transfer_name)"
                    " VALUES (?, ?, ?, ?)",
                    (str(uuid.uuid4()), str(uuid.uuid4()), f"~/Library/Messages/Attachments/x/{name}", name),
                )
                self.db.execute(
                    "INSERT INTO message_attachment_join (message_id, attachment_id) VALUES (?, ?)",
                    (rowid, att.lastrowid),
                )
            if link:
                self._link(chat, rowid, unix_s)
            self.db.execute("COMMIT")
        return Written(rowid, guid)

    def link(self, chat: int, written: Written, unix_s: float = 1_736_244_000.0) -> None:
        """Write a message's chat link in its own, later transaction."""
        with self._lock:
            self._link(chat, written.rowid, unix_s)

    def _link(self, chat: int, rowid: int, unix_s: float) -> None:
        self.db.execute(
            "INSERT INTO chat_message_join (chat_id, message_id, message_date) VALUES (?, ?, ?)",
            (chat, rowid, apple_ns(unix_s)),
        )

    def close(self) -> None:
        self.db.close()


_STAND_IN = """#!{python}
# Stand-in for macOS osascript (tests only): records argv as bytes and the script from stdin.
import json, os, sys, time
script = sys.stdin.read()
argv = [os.fsencode(a).hex() for a in sys.argv[1:]]
with open({record!r}, "a") as f:
    f.write(json.dumps({{"argv": argv, "script": script}}) + "\\n")
config = json.load(open({config!r}))
time.sleep(config.get("delay", 0))
if config.get("fail"):
    sys.stderr.write("execution error: Messages got an error: " + config["fail"] + "\\n")
    sys.exit(1)
if "chat id theChat" in script and sys.argv[3] in config.get("unknown_chats", []):
    error = 'Can\\u2019t get chat id "%s". (-1728)' % sys.argv[3]
    sys.stderr.write("execution error: Messages got an error: " + error + "\\n")
    sys.exit(1)
"""


@dataclass(frozen=True)
class Call:
    argv: list[bytes]
    script: str


class StandInOsascript:
    """An executable standing in for ``/usr/bin/osascript`` (the only mock in these tests)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "osascript"
        self.record = directory / "osascript-calls.jsonl"
        self.config = directory / "osascript-config.json"
        self.configure()
        self.path.write_text(
            _STAND_IN.format(python=sys.executable, record=str(self.record), config=str(self.config))
        )
        self.path.chmod(0o755)

    def configure(self, *, unknown_chats: tuple[str, ...] = (), fail: str = "", delay: float = 0) -> None:
        self.config.write_text(
            json.dumps({"unknown_chats": list(unknown_chats), "fail": fail, "delay": delay})
        )

    def calls(self) -> list[Call]:
        if not self.record.exists():
            return []
        out = []
        for line in self.record.read_text().splitlines():
            item = json.loads(line)
            out.append(Call([bytes.fromhex(a) for a in item["argv"]], item["script"]))
        return out
