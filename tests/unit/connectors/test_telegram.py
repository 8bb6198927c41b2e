"""Telegram connector logic without a network: message -> envelope, commands, addresses, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from telegram import Message
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)

from microclaw.connectors.base import ConnectorSettings, Secrets
from microclaw.connectors.telegram import (
    TelegramConnector,
    bot_command,
    message_to_envelope,
    platform_chat,
)
from microclaw.errors import ConfigError, PermanentConnectorError, TransientConnectorError

BOT = "andy_bot"
BOT_ID = 99


def message(text: str | None = None, *, chat_type: str = "supergroup", **fields: Any) -> Message:
    chat: dict[str, Any] = {"id": -100123, "type": chat_type, "title": "Dev team"}
    if chat_type == "private":
        chat = {"id": 55, "type": "private", "first_name": "Dana"}
    data: dict[str, Any] = {
        "message_id": 7,
        "date": 1_700_000_000,
        "chat": chat,
        "from": {"id": 55, "is_bot": False, "first_name": "Dana", "username": "dana"},
        **fields,
    }
    if text is not None:
        data["text"] = text
    return Message.de_json(data, None)


def envelope(msg: Message, **kwargs: Any) -> Any:
    return message_to_envelope(msg, assistant_name="Andy", bot_username=BOT, bot_id=BOT_ID, **kwargs)


def test_text_message_fields() -> None:
    env = envelope(message("hello there"))
    assert env.message_id == "tg:-100123:7" and env.chat_id == "tg:-100123" and env.source == "telegram"
    p = env.payload
    assert (p.text, p.sender, p.sender_name, p.chat_name, p.is_group) == (
        "hello there",
        "55",
        "Dana",
        "Dev team",
        True,
    )
    assert env.ts_ms == 1_700_000_000_000
    assert not p.is_from_me and not p.is_bot_message


def test_private_chat_is_named_after_the_sender() -> None:
    env = envelope(message("hi", chat_type="private"))
    assert (env.chat_id, env.payload.chat_name, env.payload.is_group) == ("tg:55", "Dana", False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hey @andy_bot look", "@Andy hey @andy_bot look"),
        ("@ANDY_BOT case does not matter", "@Andy @ANDY_BOT case does not matter"),
        ("@Andy @andy_bot already triggered", "@Andy @andy_bot already triggered"),
        ("@andy_bot_fan is someone else", "@andy_bot_fan is someone else"),
        ("héllo 👋 @andy_bot", "@Andy héllo 👋 @andy_bot"),  # UTF-16 entity offsets
    ],
)
def test_a_mention_of_the_bot_becomes_the_trigger(text: str, expected: str) -> None:
    handle = text.split("@")[-1].split()[0]
    offset = len(text[: text.rindex("@")].encode("utf-16-le")) // 2
    entities = [{"type": "mention", "offset": offset, "length": len(handle) + 1}]
    assert envelope(message(text, entities=entities)).payload.text == expected


def test_a_text_mention_without_username_counts() -> None:
    entities = [
        {
            "type": "text_mention",
            "offset": 0,
            "length": 4,
            "user": {"id": BOT_ID, "is_bot": True, "first_name": "Andy"},
        }
    ]
    assert envelope(message("Andy, help", entities=entities)).payload.text == "@Andy Andy, help"


def test_without_a_mention_nothing_is_prepended() -> None:
    assert (
        envelope(message("just @andy_bot typed, no entity")).payload.text == "just @andy_bot typed, no entity"
    )


FILE = {"file_id": "f", "file_unique_id": "u"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"photo": [{**FILE, "width": 1, "height": 1}]}, "[Photo]"),
        ({"photo": [{**FILE, "width": 1, "height": 1}], "caption": "sunset"}, "[Photo] sunset"),
        ({"voice": {**FILE, "duration": 2}}, "[Voice message]"),
        ({"audio": {**FILE, "duration": 2}}, "[Audio]"),
        ({"video": {**FILE, "width": 1, "height": 1, "duration": 2}}, "[Video]"),
        ({"document": {**FILE, "file_name": "a.pdf"}}, "[Document: a.pdf]"),
        ({"document": FILE}, "[Document: file]"),
        (
            {
                "sticker": {
                    **FILE,
                    "width": 1,
                    "height": 1,
                    "is_animated": False,
                    "is_video": False,
                    "type": "regular",
                    "emoji": "🔥",
                }
            },
            "[Sticker 🔥]",
        ),
        ({"location": {"latitude": 1.0, "longitude": 2.0}}, "[Location]"),
        ({"contact": {"phone_number": "1", "first_name": "Eve"}}, "[Contact]"),
    ],
)
def test_non_text_messages_become_placeholders(fields: dict[str, Any], expected: str) -> None:
    assert envelope(message(**fields)).payload.text == expected


def test_a_caption_mention_triggers_too() -> None:
    fields = {
        "photo": [{**FILE, "width": 1, "height": 1}],
        "caption": "@andy_bot what is this",
        "caption_entities": [{"type": "mention", "offset": 0, "length": 9}],
    }
    assert envelope(message(**fields)).payload.text == "@Andy [Photo] @andy_bot what is this"


def test_service_messages_are_skipped() -> None:
    assert envelope(message(new_chat_title="Renamed")) is None


def test_reply_fields_come_from_the_replied_message() -> None:
    original = {
        "message_id": 3,
        "date": 1_699_999_000,
        "chat": {"id": -100123, "type": "supergroup", "title": "Dev team"},
        "from": {"id": 77, "is_bot": False, "first_name": "Bob"},
        "text": "the question",
    }
    p = envelope(message("the answer", reply_to_message=original)).payload
    assert (p.reply_to_message_id, p.reply_to_message_content, p.reply_to_sender_name) == (
        "tg:-100123:3",
        "the question",
        "Bob",
    )


def test_text_over_the_envelope_limit_is_refused() -> None:
    from microclaw.errors import EnvelopeError

    with pytest.raises(EnvelopeError):
        envelope(message("x" * 100), max_text_bytes=50)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/ping", "ping"),
        ("/chatid", "chatid"),
        ("/PING extra words", "ping"),
        ("/chatid@andy_bot", "chatid"),
        ("/chatid@Andy_Bot", "chatid"),
        ("/chatid@other_bot", None),
        ("/start", None),
        ("ping", None),
        ("/", None),
        (None, None),
    ],
)
def test_bot_commands(text: str | None, expected: str | None) -> None:
    assert bot_command(text, BOT) == expected


def test_addresses() -> None:
    assert platform_chat("tg:-1001234") == -1001234
    assert platform_chat("tg:42") == 42
    assert platform_chat("tg:@somechannel") == "@somechannel"
    for bad in ("tg:", "tg:abc", "dc:1", "local:main", "tg:@"):
        with pytest.raises(PermanentConnectorError):
            platform_chat(bad)


def settings(tmp_path: Path, secrets: dict[str, str] | None = None, **options: Any) -> ConnectorSettings:
    return ConnectorSettings(
        name="telegram",
        options={"enabled": True, **options},
        data_dir=tmp_path,
        assistant_name="Andy",
        secrets=Secrets(TelegramConnector.secrets, secrets),
    )


def test_from_settings_needs_the_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        TelegramConnector.from_settings(settings(tmp_path))
    assert caught.value.key == "TELEGRAM_BOT_TOKEN" and "TELEGRAM_BOT_TOKEN" in str(caught.value)


def test_from_settings_reads_options_and_validates_them(tmp_path: Path) -> None:
    tg = TelegramConnector.from_settings(
        settings(
            tmp_path, {"TELEGRAM_BOT_TOKEN": "1:secret"}, base_url="http://127.0.0.1:9/bot", poll_timeout_s=5
        )
    )
    assert (tg.base_url, tg.poll_timeout_s, tg.per_chat_interval_s) == ("http://127.0.0.1:9/bot", 5.0, 1.0)
    assert "secret" not in repr(tg)
    with pytest.raises(ConfigError) as caught:
        TelegramConnector.from_settings(
            settings(tmp_path, {"TELEGRAM_BOT_TOKEN": "1:x"}, poll_timeout_s="soon")
        )
    assert caught.value.key == "connectors.telegram.poll_timeout_s"


@pytest.mark.parametrize(
    ("exc", "kind", "retry_after"),
    [
        (RetryAfter(7), TransientConnectorError, 7.0),
        (TimedOut(), TransientConnectorError, None),
        (NetworkError("connection reset"), TransientConnectorError, None),
        (Forbidden("Forbidden: bot was blocked by the user"), PermanentConnectorError, None),
        (BadRequest("Bad Request: chat not found"), PermanentConnectorError, None),
        (ChatMigrated(-1009), PermanentConnectorError, None),
        (InvalidToken("The token `1:secret` was rejected by the server."), PermanentConnectorError, None),
    ],
)
def test_sdk_errors_are_translated(
    tmp_path: Path, exc: Exception, kind: type, retry_after: float | None
) -> None:
    tg = TelegramConnector("1:secret", assistant_name="Andy")
    error = tg._translate(exc, "tg:1")
    assert type(error) is kind and error.retry_after == retry_after and error.chat_id == "tg:1"
    assert "1:secret" not in str(error)


def test_an_anonymous_admin_posts_as_the_group() -> None:
    msg = Message.de_json(
        {
            "message_id": 8,
            "date": 1_700_000_000,
            "chat": {"id": -100123, "type": "supergroup", "title": "Dev team"},
            "sender_chat": {"id": -100123, "type": "supergroup", "title": "Dev team"},
            "text": "announcement",
        },
        None,
    )
    p = envelope(msg).payload
    assert (p.sender, p.sender_name) == ("-100123", "Dev team")
