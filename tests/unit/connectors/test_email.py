"""microclaw/connectors/email.py without a network: settings, cursor, envelopes, boot skip."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from microclaw.config import load_settings
from microclaw.connectors.base import ConnectorSettings, Secrets
from microclaw.connectors.email import Cursor, EmailConnector, EmailOptions
from microclaw.connectors.imap import FetchedMail
from microclaw.errors import ConfigError, PermanentConnectorError
from microclaw.runtime.wiring import build_connectors

SECRETS = {"EMAIL_IMAP_PASSWORD": "imap-pw"}
BASE = {"imap_host": "imap.example.com", "imap_user": "andy@example.com", "smtp_host": "smtp.example.com"}


def options(**overrides: Any) -> EmailOptions:
    return EmailOptions.parse({**BASE, **overrides}, SECRETS, "Andy")


def connector(tmp_path: Path, **overrides: Any) -> EmailConnector:
    return EmailConnector.from_settings(
        ConnectorSettings(
            name="email",
            options={**BASE, **overrides},
            data_dir=tmp_path,
            assistant_name="Andy",
            secrets=Secrets(EmailConnector.secrets, SECRETS),
        )
    )


def fetched(uid: int = 1, **headers: str) -> FetchedMail:
    msg = EmailMessage()
    defaults = {"From": "Alice <alice@example.com>", "To": "andy@example.com", "Subject": "Hi"}
    body = headers.pop("body", "Hello")
    for name, value in {**defaults, **headers}.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return FetchedMail(uid=uid, raw=bytes(msg), internaldate=datetime(2025, 1, 7, tzinfo=UTC), size=100)


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "key"),
    [("imap_host", "connectors.email.imap_host"), ("imap_user", "connectors.email.imap_user")],
)
def test_missing_required_settings_name_the_key(missing: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        EmailOptions.parse({k: v for k, v in BASE.items() if k != missing}, SECRETS, "Andy")
    assert info.value.key == key and key in str(info.value)


def test_missing_password_and_bad_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match="EMAIL_IMAP_PASSWORD is not set"):
        EmailOptions.parse(BASE, {}, "Andy")
    with pytest.raises(ConfigError, match=r"connectors\.email\.from_address is not set"):
        EmailOptions.parse({**BASE, "imap_user": "andy"}, SECRETS, "Andy")
    with pytest.raises(ConfigError, match="from_address: not an email address"):
        options(from_address="andy at example")
    with pytest.raises(ConfigError, match="group_by: expected one of correspondent, thread"):
        options(group_by="subject")
    with pytest.raises(ConfigError, match="imap_tls: expected true or false"):
        options(imap_tls="maybe")
    with pytest.raises(ConfigError, match="poll_interval_s: expected a number"):
        options(poll_interval_s="often")


def test_defaults_follow_the_tls_mode() -> None:
    o = options()
    assert (o.imap_port, o.smtp_port, o.smtp_starttls, o.from_address) == (993, 587, True, "andy@example.com")
    assert o.from_name == "Andy" and o.subject == "Message from Andy" and o.group_by == "correspondent"
    plain = options(imap_tls=False, smtp_tls=True, imap_port=0, smtp_port="0")
    assert (plain.imap_port, plain.smtp_port, plain.smtp_starttls) == (143, 465, False)
    assert options(idle_timeout_s=7200).idle_timeout_s == 29 * 60  # servers end IDLE after 30 min


def test_smtp_password_defaults_to_the_imap_one_only_with_a_login() -> None:
    assert options().smtp_password == ""
    assert options(smtp_user="andy").smtp_password == "imap-pw"
    separate = EmailOptions.parse({**BASE, "smtp_user": "andy"}, {**SECRETS, "EMAIL_SMTP_PASSWORD": "s"}, "A")
    assert separate.smtp_password == "s"


def test_passwords_never_show_in_repr() -> None:
    assert "imap-pw" not in repr(options(smtp_user="andy"))


def test_secrets_are_declared_and_an_unconfigured_connector_is_skipped(isolated_env: Any) -> None:
    assert EmailConnector.secrets == ("EMAIL_IMAP_PASSWORD", "EMAIL_SMTP_PASSWORD")
    boots = {b.name: b for b in build_connectors(load_settings())}
    assert boots["email"].state == "skipped"
    assert boots["email"].detail == "connectors.email.imap_host is not set"


def test_configured_from_the_environment(isolated_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROCLAW_CONNECTORS__EMAIL__IMAP_HOST", "imap.example.com")
    monkeypatch.setenv("MICROCLAW_CONNECTORS__EMAIL__IMAP_USER", "andy@example.com")
    monkeypatch.setenv("MICROCLAW_CONNECTORS__EMAIL__SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("EMAIL_IMAP_PASSWORD", "pw")
    boots = {b.name: b for b in build_connectors(load_settings())}
    assert boots["email"].state == "active"
    email = boots["email"].connector
    assert isinstance(email, EmailConnector) and email.opts.imap_password == "pw"
    assert email.owns("email:alice@example.com") and not email.owns("imsg:x")


# --- cursor ---------------------------------------------------------------------------------


def test_cursor_advances_uid_and_keeps_the_newest_date() -> None:
    c = Cursor(7, 10, "2025-01-07T00:00:00+00:00")
    c = c.advanced(11, datetime(2025, 1, 8, tzinfo=UTC))
    c = c.advanced(12, datetime(2025, 1, 6, tzinfo=UTC))  # older INTERNALDATE (an imported mail)
    c = c.advanced(13, None)
    assert c == Cursor(7, 13, "2025-01-08T00:00:00+00:00")
    assert Cursor.from_json(c.to_json()) == c


# --- envelopes ------------------------------------------------------------------------------


def test_envelope_fields_and_remembered_reply_route(tmp_path: Path) -> None:
    email = connector(tmp_path)
    env = email.envelope_for(
        fetched(
            Message_ID="<m1@example.com>",
            Reply_To="alice@work.example",
            Date="Tue, 07 Jan 2025 10:00:00 +0000",
        )
    )
    assert env is not None
    assert env.message_id == "email:<m1@example.com>" and env.chat_id == "email:alice@example.com"
    assert env.payload.text == "Subject: Hi\n\nHello"
    assert env.payload.chat_name == "Alice" and env.payload.is_group is False
    assert env.ts_ms == 1736244000000
    assert email.state.get("chat:email:alice@example.com") == {
        "to": ["alice@work.example"],
        "cc": [],
        "subject": "Hi",
        "parent": "<m1@example.com>",
        "references": [],
    }


def test_thread_mode_groups_by_root_and_replies_to_all(tmp_path: Path) -> None:
    email = connector(tmp_path, group_by="thread")
    env = email.envelope_for(
        fetched(
            Message_ID="<m3@x.y>",
            From="Bob <bob@example.com>",
            Cc="alice@example.com, andy@example.com",
            Subject="Re: Trip",
            In_Reply_To="<m2@x.y>",
            References="<m1@x.y> <m2@x.y>",
        )
    )
    assert env is not None and env.chat_id == "email:<m1@x.y>"
    assert env.payload.text == "Hello"  # a reply: no subject line
    assert env.payload.chat_name == "Trip" and env.payload.is_group is True
    assert env.payload.reply_to_message_id == "email:<m2@x.y>"
    facts = email.state.get("chat:email:<m1@x.y>")
    assert facts["to"] == ["bob@example.com"] and facts["cc"] == ["alice@example.com"]


def test_own_and_automated_mail_is_marked_so_nobody_answers_it(tmp_path: Path) -> None:
    email = connector(tmp_path)
    ours = email.envelope_for(fetched(Message_ID="<mc-abc@example.com>", From="andy@example.com", To="a@b.c"))
    assert ours is not None and ours.payload.is_from_me and ours.payload.is_bot_message
    assert ours.chat_id == "email:a@b.c"  # our mail belongs to the conversation with its recipient
    assert email.state.get("chat:email:a@b.c") is None  # and never becomes the reply route
    mine = email.envelope_for(fetched(Message_ID="<note@example.com>", From="andy@example.com", To="a@b.c"))
    assert mine is not None and mine.payload.is_from_me and not mine.payload.is_bot_message
    bounce = email.envelope_for(fetched(Message_ID="<b@x>", Auto_Submitted="auto-replied"))
    assert bounce is not None and bounce.payload.is_bot_message and not bounce.payload.is_from_me


def test_oversized_text_ids_and_messages(tmp_path: Path) -> None:
    email = EmailConnector(
        EmailOptions.parse(BASE, SECRETS, "Andy"),
        connector(tmp_path).state,
        max_text_bytes=1000,
    )
    env = email.envelope_for(fetched(Message_ID="<big@x>", body="é" * 2000))
    assert (
        env is not None
        and len(env.payload.text.encode()) <= 1000
        and env.payload.text.endswith("[truncated]")
    )
    long_id = "<" + "x" * 600 + "@example.com>"
    env = email.envelope_for(fetched(Message_ID=long_id))
    assert env is not None and len(env.message_id) <= 512
    assert env.message_id == email.envelope_for(fetched(Message_ID=long_id)).message_id  # stable
    mail = fetched(Message_ID="<huge@x>")
    huge = FetchedMail(uid=1, raw=mail.raw, internaldate=None, size=50_000_000, headers_only=True)
    env = email.envelope_for(huge)
    assert env is not None and "[message of 50000000 bytes; too large to read]" in env.payload.text


def test_message_without_message_id_gets_a_stable_one(tmp_path: Path) -> None:
    email = connector(tmp_path)
    a = email.envelope_for(fetched(Date="Tue, 07 Jan 2025 10:00:00 +0000"))
    b = email.envelope_for(fetched(uid=2, Date="Tue, 07 Jan 2025 10:00:00 +0000"))
    assert a is not None and b is not None
    assert a.message_id == b.message_id and a.message_id.endswith("@microclaw.invalid>")


def test_send_refuses_an_address_it_does_not_own(tmp_path: Path) -> None:
    with pytest.raises(PermanentConnectorError, match="not an email address"):
        asyncio.run(connector(tmp_path).send("imsg:any;-;x", "hi", idempotency_key="k"))
