"""The email connector against a real Dovecot (IMAP) and a real SMTP server (aiosmtpd).

Inbound mail travels as it would in production: smtplib → aiosmtpd → ``dovecot-lda`` → the
Maildir → Dovecot → imapclient (IDLE). Replies go out through smtplib to aiosmtpd, which
captures them. Nothing is mocked; the crash tests store into a real app database through the
real host code (``FlakyHost`` from this package's conftest).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from microclaw.connectors.base import ConnectorSettings, Secrets
from microclaw.connectors.email import EmailConnector
from microclaw.connectors.state import ConnectorState
from microclaw.envelope import Envelope
from microclaw.errors import PermanentConnectorError, TransientConnectorError
from microclaw.store import groups
from microclaw.store.db import write_tx
from tests.integration.connectors.conftest import CrashAfterStore, cancel, stored, supervise, until
from tests.integration.connectors.conftest import stop as stop_host
from tests.integration.connectors.dovecot import (
    ADDRESS,
    PASSWORD,
    USER,
    Dovecot,
    Mailroom,
    start_dovecot,
)
from tests.integration.stack import wait_for

WAIT = 15  # generous deadline for one mail to travel SMTP → LDA → IMAP → connector


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = start_dovecot()
    yield server
    server.stop()


@pytest.fixture
def mailroom(dovecot: Dovecot) -> Iterator[Mailroom]:
    room = Mailroom(dovecot)
    yield room
    room.stop()


def connector_for(
    data_dir: Path,
    dovecot: Dovecot,
    mailroom: Mailroom,
    secrets: dict[str, str] | None = None,
    **options: Any,
) -> EmailConnector:
    """An EmailConnector built the way the host builds it: from its settings slice."""
    opts: dict[str, Any] = {
        "imap_host": "127.0.0.1",
        "imap_port": dovecot.port,
        "imap_user": USER,
        "imap_tls": False,
        "smtp_host": "127.0.0.1",
        "smtp_port": mailroom.port,
        "smtp_starttls": False,
        "from_address": ADDRESS,
        "idle_timeout_s": 60,  # a mail seen before this proves IDLE push, not a timeout
        "poll_interval_s": 0.1,
        "timeout_s": 10,
        **options,
    }
    return EmailConnector.from_settings(
        ConnectorSettings(
            name="email",
            options=opts,
            data_dir=data_dir,
            assistant_name="Andy",
            secrets=Secrets(
                EmailConnector.secrets, secrets if secrets is not None else {"EMAIL_IMAP_PASSWORD": PASSWORD}
            ),
        )
    )


def mail(
    subject: str,
    body: str,
    *,
    sender: str = "Alice <alice@example.com>",
    msgid: str,
    to: str = ADDRESS,
    cc: str | None = None,
    references: list[str] | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = msgid
    msg["Date"] = "Tue, 07 Jan 2025 10:00:00 +0000"
    if references:
        msg["In-Reply-To"] = references[-1]
        msg["References"] = " ".join(references)
    msg.set_content(body)
    return msg


class Inbox:
    """A ``deliver`` callback that keeps what it was handed."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def __call__(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    async def wait(self, count: int, timeout: float = WAIT) -> list[Envelope]:
        await until(lambda: len(self.envelopes) >= count, timeout, f"{count} delivered envelopes")
        return self.envelopes


async def start(connector: EmailConnector, deliver: Any) -> asyncio.Task[None]:
    """Run ``listen`` as a task and wait until it has selected the folder."""
    task = asyncio.create_task(connector.listen(deliver))
    await until(lambda: task.done() or connector.cursor(), WAIT, "the listener to start")
    if task.done():
        task.result()
    return task


async def send(mailroom: Mailroom, *messages: EmailMessage) -> None:
    for msg in messages:
        await asyncio.to_thread(mailroom.send, msg)


def register(engine: Engine, *jids: str) -> None:
    with write_tx(engine) as conn:
        for index, jid in enumerate(jids):
            groups.register_group(conn, jid=jid, name=jid, folder=f"email_{index}", trigger="@Andy")


# --- inbound --------------------------------------------------------------------------------


def test_idle_push_delivers_new_mail_promptly_and_does_not_import_old_mail(
    dovecot: Dovecot, mailroom: Mailroom, tmp_path: Path, runner: asyncio.Runner
) -> None:
    mailroom.send(mail("Old news", "from before the assistant existed", msgid="<old@example.com>"))
    connector = connector_for(tmp_path, dovecot, mailroom)

    async def scenario() -> list[Envelope]:
        inbox = Inbox()
        task = await start(connector, inbox)
        await send(mailroom, mail("Lunch?", "Are you free at noon?", msgid="<m1@example.com>"))
        envelopes = await inbox.wait(1)
        await cancel(task)
        return envelopes

    (envelope,) = runner.run(scenario())
    assert envelope.source == "email"
    assert envelope.message_id == "email:<m1@example.com>"
    assert envelope.chat_id == "email:alice@example.com"
    assert envelope.payload.sender == "alice@example.com"
    assert envelope.payload.sender_name == "Alice"
    assert envelope.payload.text == "Subject: Lunch?\n\nAre you free at noon?"
    assert envelope.payload.is_from_me is False and envelope.payload.is_bot_message is False
    assert envelope.ts_ms == 1736244000000  # the Date header


def test_polling_fallback_when_the_server_does_not_offer_idle(
    tmp_path: Path, runner: asyncio.Runner, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_dovecot(idle=False)
    room = Mailroom(server)
    try:
        connector = connector_for(tmp_path, server, room)

        async def scenario() -> list[Envelope]:
            inbox = Inbox()
            task = await start(connector, inbox)
            await send(room, mail("Ping", "anyone there?", msgid="<poll@example.com>"))
            envelopes = await inbox.wait(1)
            await cancel(task)
            return envelopes

        with caplog.at_level(logging.INFO, logger="microclaw.connectors.email"):
            (envelope,) = runner.run(scenario())
        assert envelope.message_id == "email:<poll@example.com>"
        assert "polling every 0.1 s" in caplog.text
    finally:
        room.stop()
        server.stop()


def test_mime_variants_arrive_as_the_text_a_person_wrote(
    dovecot: Dovecot, mailroom: Mailroom, tmp_path: Path, runner: asyncio.Runner
) -> None:
    plain = mail("Plain", "Just plain text.\nSecond line.", msgid="<plain@example.com>")

    alternative = mail("Alt", "The plain part wins.", msgid="<alt@example.com>")
    alternative.add_alternative("<p>The <b>HTML</b> part loses.</p>", subtype="html")

    html_only = mail("Html", "placeholder", msgid="<html@example.com>")
    html_only.set_content(
        "<html><body><p>Hello <b>Andy</b>,</p><ul><li>one</li><li>two</li></ul>"
        '<div class="gmail_quote">On Mon, Bob wrote:<blockquote>old stuff</blockquote></div>'
        "</body></html>",
        subtype="html",
    )

    attachment = mail("Report", "See the attached report.", msgid="<att@example.com>")
    attachment.add_attachment(
        b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="q3 report.pdf"
    )
    attachment.add_attachment(b"\x89PNG", maintype="image", subtype="png", filename="chart.png")

    quoted = mail(
        "Re: Plans",
        "Sounds good, see you then.\n\n"
        "On Mon, 6 Jan 2025 at 10:00, Andy <assistant@example.test> wrote:\n"
        "> Shall we meet at three?\n> It is sunny.\n",
        msgid="<reply@example.com>",
        references=["<plans@example.test>"],
    )

    connector = connector_for(tmp_path, dovecot, mailroom)

    async def scenario() -> list[Envelope]:
        inbox = Inbox()
        task = await start(connector, inbox)
        await send(mailroom, plain, alternative, html_only, attachment, quoted)
        envelopes = await inbox.wait(5)
        await cancel(task)
        return envelopes

    texts = {e.message_id: e.payload.text for e in runner.run(scenario())}
    assert texts == {
        "email:<plain@example.com>": "Subject: Plain\n\nJust plain text.\nSecond line.",
        "email:<alt@example.com>": "Subject: Alt\n\nThe plain part wins.",
        "email:<html@example.com>": "Subject: Html\n\nHello Andy,\n\none\ntwo",
        "email:<att@example.com>": (
            "Subject: Report\n\nSee the attached report.\n"
            "[Attachment: q3 report.pdf]\n[Attachment: chart.png]"
        ),
        "email:<reply@example.com>": "Sounds good, see you then.",
    }


@pytest.mark.parametrize("group_by", ["correspondent", "thread"])
def test_grouping_per_correspondent_or_per_thread(
    group_by: str, dovecot: Dovecot, mailroom: Mailroom, tmp_path: Path, runner: asyncio.Runner
) -> None:
    connector = connector_for(tmp_path, dovecot, mailroom, group_by=group_by)
    messages = [
        mail("Trip", "Where shall we go?", msgid="<a1@example.com>", cc="bob@example.com"),
        mail(
            "Re: Trip",
            "The mountains.",
            sender="Bob <bob@example.com>",
            msgid="<a2@example.com>",
            cc="alice@example.com",
            references=["<a1@example.com>"],
        ),
        mail("Books", "Read anything good?", msgid="<b1@example.com>"),
    ]

    async def scenario() -> list[Envelope]:
        inbox = Inbox()
        task = await start(connector, inbox)
        await send(mailroom, *messages)
        envelopes = await inbox.wait(3)
        await cancel(task)
        return envelopes

    envelopes = sorted(runner.run(scenario()), key=lambda e: e.message_id)
    chats = [(e.message_id, e.chat_id, e.payload.is_group) for e in envelopes]
    if group_by == "correspondent":
        assert chats == [
            ("email:<a1@example.com>", "email:alice@example.com", False),
            ("email:<a2@example.com>", "email:bob@example.com", False),
            ("email:<b1@example.com>", "email:alice@example.com", False),
        ]
    else:
        assert chats == [
            ("email:<a1@example.com>", "email:<a1@example.com>", True),
            ("email:<a2@example.com>", "email:<a1@example.com>", True),
            ("email:<b1@example.com>", "email:<b1@example.com>", False),
        ]
        assert [e.payload.chat_name for e in envelopes] == ["Trip", "Trip", "Books"]


# --- outbound -------------------------------------------------------------------------------


def test_reply_threads_under_the_received_mail_even_from_another_process(
    dovecot: Dovecot, tmp_path: Path, runner: asyncio.Runner
) -> None:
    """The outbound worker's connector never listened: it finds the thread in the state file.
    The SMTP server checks AUTH, proving EMAIL_SMTP_PASSWORD reaches the login."""
    room = Mailroom(dovecot, login=("andy-smtp", "smtp-secret"))
    try:
        secrets = {"EMAIL_IMAP_PASSWORD": PASSWORD, "EMAIL_SMTP_PASSWORD": "smtp-secret"}
        listener = connector_for(tmp_path, dovecot, room, secrets, smtp_user="andy-smtp")
        inbound = mail(
            "Re: Plans",
            "Shall we say three?",
            msgid="<m2@example.com>",
            references=["<m0@example.com>", "<m1@example.test>"],
        )

        async def receive() -> None:
            inbox = Inbox()
            task = await start(listener, inbox)
            await send(room, inbound)
            await inbox.wait(1)
            await cancel(task)

        runner.run(receive())
        outbound = connector_for(tmp_path, dovecot, room, secrets, smtp_user="andy-smtp")
        first = runner.run(
            outbound.send("email:alice@example.com", "Three works.", idempotency_key="run:1:reply")
        )
        second = runner.run(
            outbound.send("email:alice@example.com", "See you!", idempotency_key="run:2:reply")
        )
        one, two = (c.message for c in room.wait_captured(2))
    finally:
        room.stop()

    assert room.captured[0].rcpt_tos == ["alice@example.com"]
    assert room.captured[0].login == "andy-smtp"
    assert one["From"] == f"Andy <{ADDRESS}>"
    assert one["To"] == "alice@example.com"
    assert one["Subject"] == "Re: Plans"
    assert one["Message-ID"] == first and first.startswith("<mc-") and first.endswith("@example.test>")
    assert one["In-Reply-To"] == "<m2@example.com>"
    assert one["References"] == "<m0@example.com> <m1@example.test> <m2@example.com>"
    assert one["Auto-Submitted"] == "auto-replied"
    assert one.get_content().strip() == "Three works."
    # The next reply threads under the previous one.
    assert two["In-Reply-To"] == first and two["Message-ID"] == second
    assert two["References"] == f"<m0@example.com> <m1@example.test> <m2@example.com> {first}"


def test_first_message_to_an_address_and_unknown_threads(
    dovecot: Dovecot, mailroom: Mailroom, tmp_path: Path, runner: asyncio.Runner
) -> None:
    connector = connector_for(tmp_path, dovecot, mailroom)
    runner.run(connector.send("email:carol@example.com", "Hello Carol", idempotency_key="k1"))
    (captured,) = mailroom.wait_captured(1)
    assert captured.message["Subject"] == "Message from Andy"
    assert captured.message["In-Reply-To"] is None
    with pytest.raises(PermanentConnectorError, match="no conversation known"):
        runner.run(connector.send("email:<never-seen@example.com>", "hi", idempotency_key="k2"))


def test_smtp_errors_map_to_transient_and_permanent(
    dovecot: Dovecot, mailroom: Mailroom, tmp_path: Path, runner: asyncio.Runner
) -> None:
    connector = connector_for(tmp_path, dovecot, mailroom)

    def send_once(key: str) -> str:
        return runner.run(connector.send("email:carol@example.com", "Hello", idempotency_key=key))

    mailroom.fail_next_rcpt("550 5.1.1 No such user")
    with pytest.raises(PermanentConnectorError, match="550"):
        send_once("a")
    mailroom.fail_next_rcpt("450 4.2.1 Mailbox busy")
    with pytest.raises(TransientConnectorError, match="450"):
        send_once("b")
    mailroom.fail_next_data("554 5.7.1 Rejected as spam")
    with pytest.raises(PermanentConnectorError, match="554"):
        send_once("c")
    mailroom.fail_next_data("451 4.3.0 Try again later")
    with pytest.raises(TransientConnectorError, match="451"):
        send_once("d")
    assert send_once("e").startswith("<mc-")

    guarded = Mailroom(dovecot, login=("andy-smtp", "right"))
    try:
        wrong = connector_for(
            tmp_path,
            dovecot,
            guarded,
            {"EMAIL_IMAP_PASSWORD": PASSWORD, "EMAIL_SMTP_PASSWORD": "wrong"},
            smtp_user="andy-smtp",
        )
        with pytest.raises(PermanentConnectorError, match="login refused"):
            runner.run(wrong.send("email:carol@example.com", "Hello", idempotency_key="f"))
    finally:
        guarded.stop()
    mailroom.stop()  # nobody listens on that port any more
    with pytest.raises(TransientConnectorError, match=r"SMTP 127\.0\.0\.1"):
        send_once("g")


# --- durability -----------------------------------------------------------------------------


def test_uidvalidity_change_loses_and_duplicates_nothing(
    dovecot: Dovecot,
    mailroom: Mailroom,
    tmp_path: Path,
    runner: asyncio.Runner,
    make_host: Any,
    engine: Engine,
) -> None:
    """The watched folder is deleted and recreated while the connector idles on it (a restore):
    the old mail comes back under new UIDs next to a new one. All three are stored once."""
    dovecot.create_folder("Assistant")
    connector = connector_for(tmp_path, dovecot, mailroom, folder="Assistant")
    register(engine, "email:alice@example.com")
    first = [mail(f"Note {i}", f"note {i}", msgid=f"<n{i}@example.com>") for i in (1, 2)]
    host = make_host()

    async def scenario() -> None:
        task = await supervise(host, connector)
        await until(lambda: connector.cursor(), WAIT, "the listener to start")
        for msg in first:
            await asyncio.to_thread(dovecot.deliver, bytes(msg), "Assistant")
        await until(lambda: len(stored(engine, "email:alice@example.com")) == 2, WAIT, "two stored mails")
        old, new = await asyncio.to_thread(dovecot.recreate_folder, "Assistant")
        assert old != new
        for msg in [*first, mail("Note 3", "note 3", msgid="<n3@example.com>")]:
            await asyncio.to_thread(dovecot.deliver, bytes(msg), "Assistant")
        await until(lambda: len(stored(engine, "email:alice@example.com")) >= 3, WAIT, "the new mail")
        await until(lambda: len(host.seen) >= 5, WAIT, "the re-read of the restored mail")
        await stop_host(host, task, connector)
        assert connector.cursor().uidvalidity == new

    runner.run(scenario())
    rows = stored(engine, "email:alice@example.com")
    assert [r.id for r in rows] == [
        "email:<n1@example.com>",
        "email:<n2@example.com>",
        "email:<n3@example.com>",
    ]
    # n1 and n2 were handed over twice (before and after the change) and stored once.
    assert sorted(e.message_id for e in host.seen).count("email:<n1@example.com>") == 2


def test_store_failure_before_the_commit_is_fetched_again_and_stored_once(
    dovecot: Dovecot,
    mailroom: Mailroom,
    tmp_path: Path,
    runner: asyncio.Runner,
    make_host: Any,
    engine: Engine,
) -> None:
    connector = connector_for(tmp_path, dovecot, mailroom)
    register(engine, "email:alice@example.com")
    host = make_host(failures=1)  # the first store attempt dies before its commit

    async def scenario() -> None:
        task = await supervise(host, connector)
        await until(lambda: connector.cursor(), WAIT, "the listener to start")
        await send(mailroom, mail("Hello", "do not lose me", msgid="<keep@example.com>"))
        await until(lambda: stored(engine, "email:alice@example.com"), WAIT, "the mail after the restart")
        await stop_host(host, task, connector)

    runner.run(scenario())
    assert [e.message_id for e in host.seen] == ["email:<keep@example.com>"] * 2
    assert [r.id for r in stored(engine, "email:alice@example.com")] == ["email:<keep@example.com>"]


@pytest.mark.parametrize("crash", ["raises", "cancelled"])
def test_crash_after_the_store_but_before_the_cursor_moves_stores_once(
    crash: str, dovecot: Dovecot, mailroom: Mailroom, tmp_path: Path, runner: asyncio.Runner, engine: Engine
) -> None:
    """The message is durable, then the listener dies (an exception, or the task is cancelled as
    at shutdown) before acknowledging: after a restart it is fetched again and stored once."""
    register(engine, "email:alice@example.com")
    hand_over = CrashAfterStore(engine, crash)
    handed = hand_over.handed

    async def scenario() -> None:
        first = connector_for(tmp_path, dovecot, mailroom)
        task = await start(first, hand_over.store_then_die)
        cursor = first.cursor()
        await send(mailroom, mail("Hello", "exactly once", msgid="<once@example.com>"))
        await until(lambda: handed, WAIT, "the first hand-over")
        await hand_over.died(task)
        assert first.cursor() == cursor  # not acknowledged
        second = connector_for(tmp_path, dovecot, mailroom)  # a restarted process
        task = await start(second, hand_over.store)
        await until(lambda: len(handed) == 2, WAIT, "the mail to be fetched again")
        await until(lambda: second.cursor().uid > cursor.uid, WAIT, "the cursor to move")
        await cancel(task)

    runner.run(scenario())
    assert handed == ["email:<once@example.com>"] * 2
    assert [r.id for r in stored(engine, "email:alice@example.com")] == ["email:<once@example.com>"]


def test_host_killed_mid_stream_loses_no_mail(dovecot: Dovecot, mailroom: Mailroom, make_stack: Any) -> None:
    """The real host process with the email connector is SIGKILLed while mail is arriving; the
    restarted host fetches what was not acknowledged. Every mail is stored, each once."""
    stack = make_stack(
        MICROCLAW_CONNECTORS__EMAIL__IMAP_HOST="127.0.0.1",
        MICROCLAW_CONNECTORS__EMAIL__IMAP_PORT=str(dovecot.port),
        MICROCLAW_CONNECTORS__EMAIL__IMAP_TLS="false",
        MICROCLAW_CONNECTORS__EMAIL__IMAP_USER=USER,
        MICROCLAW_CONNECTORS__EMAIL__FROM_ADDRESS=ADDRESS,
        MICROCLAW_CONNECTORS__EMAIL__SMTP_HOST="127.0.0.1",
        MICROCLAW_CONNECTORS__EMAIL__SMTP_PORT=str(mailroom.port),
        MICROCLAW_CONNECTORS__EMAIL__SMTP_STARTTLS="false",
        EMAIL_IMAP_PASSWORD=PASSWORD,
    )
    register(stack.engine, "email:alice@example.com")
    state = stack.settings.data_dir / "email-state.db"
    stack.host()
    wait_for(
        lambda: state.exists() and ConnectorState(state).get("cursor:INBOX"), 30, "the host's email listener"
    )
    ids = [f"<k{i}@example.com>" for i in range(20)]
    for i, msgid in enumerate(ids):
        mailroom.send(mail(f"Mail {i}", f"body {i}", msgid=msgid))
        if i == 4:
            wait_for(lambda: stored(stack.engine, "email:alice@example.com"), 30, "the first stored mail")
            stack.kill("host")
    stack.host()
    wait_for(lambda: len(stored(stack.engine, "email:alice@example.com")) >= 20, 60, "all 20 mails")
    assert sorted(r.id for r in stored(stack.engine, "email:alice@example.com")) == sorted(
        f"email:{m}" for m in ids
    )
