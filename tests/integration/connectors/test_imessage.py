"""The iMessage connector on Linux, against a chat.db the tests write in Apple's schema.

Receiving is real: the connector opens the database read-only and tails it while a writer
thread plays Messages (WAL mode, message and chat link written together or apart, text or only
``attributedBody``). Sending goes through a stand-in ``osascript`` executable, the only mock in
these tests: it records the argv it was given as bytes and the script it read from stdin, and
answers like osascript (success, or an AppleScript error number such as -1728).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from microclaw.connectors.imessage import SEND_TO_CHAT, SEND_TO_PARTICIPANT, IMessageConnector
from microclaw.connectors.state import ConnectorState
from microclaw.envelope import Envelope
from microclaw.errors import PermanentConnectorError, TransientConnectorError
from microclaw.store import groups
from microclaw.store.db import write_tx
from tests.integration.connectors.chatdb import ChatDbWriter, StandInOsascript, attributed_body
from tests.integration.connectors.conftest import CrashAfterStore, cancel, stored, supervise, until
from tests.integration.connectors.conftest import stop as stop_host

WAIT = 10
GROUP = "any;+;chat493021788123"  # macOS 26 style
DIRECT = "iMessage;-;+15551234567"
DIRECT_ANY = "any;-;bob@example.com"
SMS = "SMS;-;+15557654321"


@pytest.fixture
def chat_db(tmp_path: Path) -> Iterator[ChatDbWriter]:
    writer = ChatDbWriter(tmp_path / "chat.db")
    yield writer
    writer.close()


@pytest.fixture
def osascript(tmp_path: Path) -> StandInOsascript:
    return StandInOsascript(tmp_path)


def connector_for(tmp_path: Path, osascript: StandInOsascript, **kwargs: Any) -> IMessageConnector:
    return IMessageConnector(
        tmp_path / "chat.db",
        ConnectorState(tmp_path / "data" / "imessage-state.db"),
        osascript=str(osascript.path),
        poll_interval_s=kwargs.pop("poll_interval_s", 0.02),
        **kwargs,
    )


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def __call__(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


async def start(connector: IMessageConnector, deliver: Any) -> asyncio.Task[None]:
    task = asyncio.create_task(connector.listen(deliver))
    await until(
        lambda: task.done() or connector.state.get("cursor") is not None, WAIT, "the listener to start"
    )
    if task.done():
        task.result()
    return task


class Chats:
    """The handles and chats of the scenarios."""

    def __init__(self, db: ChatDbWriter) -> None:
        self.alice = db.handle("+15551234567")
        self.bob = db.handle("bob@example.com")
        self.carol = db.handle("+15557654321", "SMS")
        self.group = db.chat(GROUP, handles=[self.alice, self.bob], display_name="Climbing")
        self.direct = db.chat(DIRECT, handles=[self.alice])
        self.direct_any = db.chat(DIRECT_ANY, handles=[self.bob])


# --- inbound --------------------------------------------------------------------------------


def test_tails_chat_db_while_messages_writes_it(
    chat_db: ChatDbWriter, osascript: StandInOsascript, tmp_path: Path, runner: asyncio.Runner
) -> None:
    chats = Chats(chat_db)
    chat_db.message(chats.direct, text="history before the first start", handle=chats.alice)
    connector = connector_for(tmp_path, osascript, join_grace_s=30)
    expected: list[tuple[str, str, str, str, bool]] = []  # message_id, chat, sender, text, is_from_me

    def messages_app() -> None:
        """A concurrent writer: 40 messages of every kind, a few with their chat link late."""
        for i in range(40):
            chat, guid, handle = [
                (chats.group, GROUP, chats.alice),
                (chats.direct, DIRECT, chats.alice),
                (chats.direct_any, DIRECT_ANY, chats.bob),
                (chats.group, GROUP, chats.bob),
            ][i % 4]
            sender = "+15551234567" if handle == chats.alice else "bob@example.com"
            text = f"message {i} — ünïcödé 👋"
            kind = i % 5
            if kind == 0:  # newer macOS: text NULL, body only in attributedBody
                w = chat_db.message(chat, body=attributed_body(text), handle=handle, unix_s=1_736_244_000 + i)
            elif kind == 1:  # the chat link is written in a later transaction
                w = chat_db.message(chat, text=text, handle=handle, unix_s=1_736_244_000 + i, link=False)
                time.sleep(0.03)
                chat_db.link(chat, w)
            elif kind == 2:  # written on this Mac's other device by the user
                w = chat_db.message(chat, text=text, is_from_me=True, unix_s=1_736_244_000 + i)
                sender = "me"
            elif kind == 3:  # a photo with a caption
                w = chat_db.message(chat, text=f"{text}\ufffc", handle=handle, attachments=("IMG_0001.HEIC",))
                text = f"{text}\n[Attachment: IMG_0001.HEIC]"
            else:
                w = chat_db.message(chat, text=text, handle=handle, unix_s=1_736_244_000 + i)
            expected.append((f"imsg:{w.guid}", f"imsg:{guid}", sender, text, kind == 2))
            if i % 7 == 0:  # noise that must be skipped: a tapback and a group rename
                chat_db.message(chat, text='Loved "x"', handle=handle, associated_type=2000)
                chat_db.message(chat, item_type=2, handle=handle)
            time.sleep(0.005)

    async def scenario() -> list[Envelope]:
        inbox = Inbox()
        task = await start(connector, inbox)
        writer = threading.Thread(target=messages_app)
        writer.start()
        await asyncio.to_thread(writer.join)
        await until(lambda: len(inbox.envelopes) >= 40, WAIT, "40 messages")
        await asyncio.sleep(0.2)  # room for a duplicate to show up
        await cancel(task)
        return inbox.envelopes

    envelopes = runner.run(scenario())
    got = [
        (e.message_id, e.chat_id, e.payload.sender, e.payload.text, e.payload.is_from_me) for e in envelopes
    ]
    assert got == expected  # every message, once, in order; nothing from before the first start
    first = envelopes[0]
    assert first.source == "imessage"
    assert first.payload.is_group is True and first.payload.chat_name == "Climbing"
    assert first.ts_ms == 1_736_244_000_000
    assert envelopes[1].payload.is_group is False and envelopes[1].payload.chat_name == "+15551234567"


def test_rebuilt_database_and_a_link_that_never_comes(
    chat_db: ChatDbWriter, osascript: StandInOsascript, tmp_path: Path, runner: asyncio.Runner
) -> None:
    """A cursor past the newest row (database rebuilt) restarts at the end; a message whose chat
    link never appears is skipped after the grace period instead of blocking the chat forever."""
    chats = Chats(chat_db)
    ConnectorState(tmp_path / "data" / "imessage-state.db").put("cursor", 10_000)
    connector = connector_for(tmp_path, osascript, join_grace_s=0.2)

    async def scenario() -> list[Envelope]:
        inbox = Inbox()
        task = asyncio.create_task(connector.listen(inbox))
        await until(lambda: connector.state.get("cursor") == 0, WAIT, "the cursor to be reset")
        chat_db.message(chats.direct, text="orphan", handle=chats.alice, link=False)
        chat_db.message(chats.direct, text="after the orphan", handle=chats.alice)
        await until(lambda: inbox.envelopes, WAIT, "the message after the orphan")
        await cancel(task)
        return inbox.envelopes

    assert [e.payload.text for e in runner.run(scenario())] == ["after the orphan"]


def test_echo_of_our_reply_is_skipped_but_the_users_own_messages_are_kept(
    chat_db: ChatDbWriter, osascript: StandInOsascript, tmp_path: Path, runner: asyncio.Runner
) -> None:
    chats = Chats(chat_db)
    connector = connector_for(tmp_path, osascript)

    async def scenario() -> list[Envelope]:
        inbox = Inbox()
        task = await start(connector, inbox)
        await connector.send(f"imsg:{GROUP}", "On my way!", idempotency_key="run:1:reply")
        chat_db.message(chats.group, body=attributed_body("On my way!"), is_from_me=True)  # the echo
        chat_db.message(chats.group, text="note to self", is_from_me=True)
        await until(lambda: inbox.envelopes, WAIT, "the user's own message")
        await asyncio.sleep(0.1)
        await cancel(task)
        return inbox.envelopes

    (envelope,) = runner.run(scenario())
    assert envelope.payload.text == "note to self" and envelope.payload.is_from_me is True


# --- outbound -------------------------------------------------------------------------------

HOSTILE = [
    'He said "hi"',
    "back\\slash \\n not a newline \\\\",
    '"; do shell script "rm -rf ~"',
    '" & (do shell script "touch /tmp/pwned") & "',
    "line one\nline two\r\nline three\ttab",
    "unicode: 👋🏽 café ñ 中文 עִבְרִית e\u0301 \u200b zero-width",
    "-e 'display dialog 1' --help $(id) `id` %s {0}",
    'end tell\nend run\non run argv\ndo shell script "id"',
    "",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_reaches_osascript_byte_for_byte_as_an_argument(
    text: str, osascript: StandInOsascript, tmp_path: Path, runner: asyncio.Runner
) -> None:
    connector = connector_for(tmp_path, osascript)
    runner.run(connector.send(f"imsg:{GROUP}", text, idempotency_key="k"))
    (call,) = osascript.calls()
    assert call.argv == [b"-", text.encode("utf-8"), GROUP.encode("utf-8")]
    assert call.script == SEND_TO_CHAT  # the script is the constant: nothing was interpolated
    assert "on run argv" in call.script


@pytest.mark.parametrize(
    ("guid", "participant", "service"),
    [
        (DIRECT, "+15551234567", "iMessage"),
        (DIRECT_ANY, "bob@example.com", "any"),
        (SMS, "+15557654321", "SMS"),
    ],
)
def test_direct_chat_unknown_to_messages_falls_back_to_the_participant(
    guid: str,
    participant: str,
    service: str,
    osascript: StandInOsascript,
    tmp_path: Path,
    runner: asyncio.Runner,
) -> None:
    osascript.configure(unknown_chats=(guid,))
    connector = connector_for(tmp_path, osascript)
    text = 'Hi "there"\nsecond line'
    runner.run(connector.send(f"imsg:{guid}", text, idempotency_key="k"))
    first, second = osascript.calls()
    assert first.script == SEND_TO_CHAT and first.argv[2] == guid.encode()
    assert second.script == SEND_TO_PARTICIPANT
    assert second.argv == [b"-", text.encode(), participant.encode(), service.encode()]


def test_group_chat_unknown_to_messages_is_permanent(
    osascript: StandInOsascript, tmp_path: Path, runner: asyncio.Runner
) -> None:
    osascript.configure(unknown_chats=(GROUP,))
    connector = connector_for(tmp_path, osascript)
    with pytest.raises(PermanentConnectorError, match="no chat"):
        runner.run(connector.send(f"imsg:{GROUP}", "hello", idempotency_key="k"))
    assert len(osascript.calls()) == 1  # no participant fallback for a group


def test_osascript_failures_map_to_transient_and_permanent(
    osascript: StandInOsascript, tmp_path: Path, runner: asyncio.Runner
) -> None:
    connector = connector_for(tmp_path, osascript, send_timeout_s=0.5)

    def send(text: str = "secret words") -> str:
        return runner.run(connector.send(f"imsg:{DIRECT}", text, idempotency_key="k"))

    osascript.configure(fail="Not authorized to send Apple events to Messages. (-1743)")
    with pytest.raises(PermanentConnectorError, match="Automation"):
        send()
    osascript.configure(fail='Can\u2019t send "secret words". (-600)')
    with pytest.raises(TransientConnectorError, match=r"\(-600\)") as info:
        send()
    assert "secret words" not in str(info.value)  # message bodies stay out of errors
    osascript.configure(delay=5)
    with pytest.raises(TransientConnectorError, match="did not finish"):
        send()
    osascript.configure()
    assert send().startswith("imsg-sent:")
    gone = IMessageConnector(tmp_path / "chat.db", connector.state, osascript=str(tmp_path / "missing"))
    with pytest.raises(PermanentConnectorError, match="cannot run"):
        runner.run(gone.send(f"imsg:{DIRECT}", "hi", idempotency_key="k"))


# --- durability -----------------------------------------------------------------------------


def _register(engine: Engine, jid: str) -> None:
    with write_tx(engine) as conn:
        groups.register_group(conn, jid=jid, name=jid, folder="imsg_group", trigger="@Andy")


def test_store_failure_before_the_commit_is_read_again_and_stored_once(
    chat_db: ChatDbWriter,
    osascript: StandInOsascript,
    tmp_path: Path,
    runner: asyncio.Runner,
    make_host: Any,
    engine: Engine,
) -> None:
    chats = Chats(chat_db)
    _register(engine, f"imsg:{GROUP}")
    connector = connector_for(tmp_path, osascript)
    host = make_host(failures=1)

    async def scenario() -> str:
        task = await supervise(host, connector)
        await until(lambda: connector.state.get("cursor") is not None, WAIT, "the listener to start")
        written = chat_db.message(chats.group, body=attributed_body("keep me"), handle=chats.bob)
        await until(lambda: stored(engine, f"imsg:{GROUP}"), WAIT, "the message after the restart")
        await stop_host(host, task, connector)
        return written.guid

    guid = runner.run(scenario())
    assert [e.message_id for e in host.seen] == [f"imsg:{guid}"] * 2
    assert [(r.id, r.content) for r in stored(engine, f"imsg:{GROUP}")] == [(f"imsg:{guid}", "keep me")]


@pytest.mark.parametrize("crash", ["raises", "cancelled"])
def test_crash_after_the_store_but_before_the_cursor_moves_stores_once(
    crash: str,
    chat_db: ChatDbWriter,
    osascript: StandInOsascript,
    tmp_path: Path,
    runner: asyncio.Runner,
    engine: Engine,
) -> None:
    chats = Chats(chat_db)
    _register(engine, f"imsg:{DIRECT}")
    hand_over = CrashAfterStore(engine, crash)
    handed = hand_over.handed

    async def scenario() -> str:
        first = connector_for(tmp_path, osascript)
        task = await start(first, hand_over.store_then_die)
        cursor = first.state.get("cursor")
        written = chat_db.message(chats.direct, text="exactly once", handle=chats.alice)
        await until(lambda: handed, WAIT, "the first hand-over")
        await hand_over.died(task)
        assert first.state.get("cursor") == cursor
        second = connector_for(tmp_path, osascript)
        task = await start(second, hand_over.store)
        await until(lambda: second.state.get("cursor") == written.rowid, WAIT, "the cursor to move")
        await cancel(task)
        return written.guid

    guid = runner.run(scenario())
    assert handed == [f"imsg:{guid}"] * 2
    assert [r.id for r in stored(engine, f"imsg:{DIRECT}")] == [f"imsg:{guid}"]
