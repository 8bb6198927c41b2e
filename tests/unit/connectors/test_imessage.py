"""microclaw/connectors/imessage.py without macOS: availability, dates, GUIDs, row → envelope."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from microclaw.config import load_settings
from microclaw.connectors.base import ConnectorSettings
from microclaw.connectors.imessage import (
    ChatRow,
    IMessageConnector,
    apple_time_ms,
    available,
    echo_key,
    is_direct_chat,
    split_chat_guid,
)
from microclaw.connectors.state import ConnectorState
from microclaw.errors import ConfigError, PermanentConnectorError
from microclaw.runtime.wiring import build_connectors
from tests.integration.connectors.chatdb import attributed_body


def row(**fields: Any) -> ChatRow:
    base: dict[str, Any] = {
        "rowid": 1,
        "guid": "MSG-1",
        "text": "hello",
        "attributed_body": None,
        "date": 757_936_800_000_000_000,
        "is_from_me": False,
        "associated_type": 0,
        "item_type": 0,
        "has_attachments": False,
        "thread_originator": None,
        "handle": "+15551234567",
        "chat_guid": "iMessage;-;+15551234567",
        "chat_style": 45,
        "chat_name": "+15551234567",
    }
    return ChatRow(**{**base, **fields})


@pytest.fixture
def connector(tmp_path: Path) -> IMessageConnector:
    return IMessageConnector(tmp_path / "chat.db", ConnectorState(tmp_path / "state.db"))


def test_available_only_on_macos() -> None:
    assert available("darwin") is None
    assert available("linux") == "unavailable: not macOS"


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS refusal")
def test_from_settings_refuses_off_macos(tmp_path: Path) -> None:
    settings = ConnectorSettings(name="imessage", options={}, data_dir=tmp_path, assistant_name="Andy")
    with pytest.raises(ConfigError, match=r"^unavailable: not macOS$"):
        IMessageConnector.from_settings(settings)


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS boot report")
def test_boot_skips_it_with_the_reason(isolated_env: Any) -> None:
    boots = {b.name: b for b in build_connectors(load_settings())}
    assert (boots["imessage"].state, boots["imessage"].detail) == ("skipped", "unavailable: not macOS")


def test_apple_dates() -> None:
    assert apple_time_ms(0) is None and apple_time_ms(None) is None
    assert apple_time_ms(757_936_800_000_000_000) == 1_736_244_000_000  # nanoseconds (macOS 10.13+)
    assert apple_time_ms(757_936_800) == 1_736_244_000_000  # seconds (older databases)


@pytest.mark.parametrize(
    ("guid", "parts", "direct"),
    [
        ("iMessage;-;+15551234567", ("iMessage", "-", "+15551234567"), True),
        ("SMS;-;+15551234567", ("SMS", "-", "+15551234567"), True),
        ("any;-;bob@example.com", ("any", "-", "bob@example.com"), True),
        ("any;+;chat493021788123", ("any", "+", "chat493021788123"), False),
        ("iMessage;+;chat1;with;semicolons", ("iMessage", "+", "chat1;with;semicolons"), False),
        ("malformed", ("", "", "malformed"), False),
    ],
)
def test_chat_guids(guid: str, parts: tuple[str, str, str], direct: bool) -> None:
    assert split_chat_guid(guid) == parts
    assert is_direct_chat(guid) is direct


def test_echo_key_ignores_placeholders_spacing_and_normal_form() -> None:
    assert echo_key("café ") == echo_key("cafe\u0301") == echo_key("\ufffccafé")
    assert echo_key("a") != echo_key("b")


def test_body_prefers_text_then_attributed_body_and_names_attachments() -> None:
    assert row(text="plain").body() == "plain"
    assert row(text=None, attributed_body=attributed_body("from the blob")).body() == "from the blob"
    assert row(text="\ufffc", attributed_body=attributed_body("blob")).body() == "blob"
    assert row(text="\ufffc", attachments=("IMG_1.HEIC", "a.pdf")).body() == (
        "[Attachment: IMG_1.HEIC]\n[Attachment: a.pdf]"
    )
    assert row(text=None, attributed_body=b"\x00broken").body() == ""


def test_envelope_from_a_row(connector: IMessageConnector) -> None:
    env = connector.envelope_for(row(thread_originator="MSG-0"))
    assert env is not None
    assert (env.source, env.message_id, env.chat_id) == (
        "imessage",
        "imsg:MSG-1",
        "imsg:iMessage;-;+15551234567",
    )
    assert (env.payload.sender, env.payload.text, env.payload.is_group) == ("+15551234567", "hello", False)
    assert env.payload.reply_to_message_id == "imsg:MSG-0"
    assert env.ts_ms == 1_736_244_000_000
    group = connector.envelope_for(row(chat_guid="any;+;chat9", chat_style=43, chat_name="Climbing"))
    assert group is not None and group.payload.is_group and group.payload.chat_name == "Climbing"
    mine = connector.envelope_for(row(is_from_me=True, handle=None, text="note"))
    assert mine is not None and mine.payload.is_from_me and mine.payload.sender == "me"


@pytest.mark.parametrize(
    "fields",
    [
        {"chat_guid": None},  # not linked to a chat
        {"associated_type": 2000},  # a tapback
        {"item_type": 1},  # a group event
        {"text": None},  # nothing to read
    ],
)
def test_rows_that_are_not_messages_are_skipped(connector: IMessageConnector, fields: dict[str, Any]) -> None:
    assert connector.envelope_for(row(**fields)) is None


def test_long_text_is_cut_to_the_envelope_limit(tmp_path: Path) -> None:
    small = IMessageConnector(tmp_path / "chat.db", ConnectorState(tmp_path / "s.db"), max_text_bytes=100)
    env = small.envelope_for(row(text="ü" * 500))
    assert (
        env is not None and len(env.payload.text.encode()) <= 100 and env.payload.text.endswith("[truncated]")
    )


def test_send_refuses_an_address_it_does_not_own(connector: IMessageConnector) -> None:
    with pytest.raises(PermanentConnectorError, match="not an iMessage address"):
        asyncio.run(connector.send("email:a@b.c", "hi", idempotency_key="k"))
