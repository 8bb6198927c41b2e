"""Discord connector logic without a network: discord.py messages -> envelopes, cursors, errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import discord
import pytest
from discord.state import ConnectionState

from microclaw.connectors.base import ConnectorSettings, Secrets
from microclaw.connectors.discord import (
    ChannelCursors,
    DiscordConnector,
    message_to_envelope,
    platform_channel,
    snowflake_ms,
)
from microclaw.connectors.state import ConnectorState
from microclaw.errors import ConfigError, PermanentConnectorError, TransientConnectorError

BOT_ID = 900000000000000001
CHANNEL = 1573686697718185985
MESSAGE = 1573686701925072899


@pytest.fixture
def state() -> ConnectionState:
    return ConnectionState(
        dispatch=lambda *a, **k: None, handlers={}, hooks={}, http=None, intents=discord.Intents.none()
    )


def user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name.lower(),
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
    }


def message(state: ConnectionState, content: str, *, dm: bool = False, **fields: Any) -> discord.Message:
    data: dict[str, Any] = {
        "id": str(MESSAGE),
        "channel_id": str(CHANNEL),
        "author": user(700000000000000001, "Alice"),
        "content": content,
        "timestamp": "2024-01-01T00:00:00+00:00",
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
        **fields,
    }
    if dm:
        channel: Any = discord.DMChannel._from_message(state, CHANNEL)
    else:
        channel = discord.PartialMessageable(state=state, id=CHANNEL, guild_id=800000000000000001)
    return discord.Message(state=state, channel=channel, data=data)


def envelope(msg: discord.Message) -> Any:
    return message_to_envelope(msg, bot_id=BOT_ID, assistant_name="Andy")


def test_fields(state: ConnectionState) -> None:
    env = envelope(message(state, "hello"))
    assert (env.message_id, env.chat_id, env.source) == (
        f"dc:{CHANNEL}:{MESSAGE}",
        f"dc:{CHANNEL}",
        "discord",
    )
    p = env.payload
    assert (p.text, p.sender, p.sender_name, p.is_group) == ("hello", "700000000000000001", "Alice", True)
    assert p.chat_name is None  # guild not loaded yet: the stored name is left alone
    assert env.ts_ms == snowflake_ms(MESSAGE)


def test_a_dm_is_named_after_the_sender(state: ConnectionState) -> None:
    p = envelope(message(state, "psst", dm=True)).payload
    assert (p.chat_name, p.is_group) == ("Alice", False)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"<@{BOT_ID}> what's up", "@Andy what's up"),
        (f"<@!{BOT_ID}> nickname mention", "@Andy nickname mention"),
        (f"hey <@{BOT_ID}>", "@Andy hey"),
        (f"@Andy <@{BOT_ID}> already", "@Andy  already"),
        (f"<@{BOT_ID}>", "@Andy "),
        ("<@700000000000000009> someone else", "<@700000000000000009> someone else"),
    ],
)
def test_a_bot_mention_is_stripped_and_becomes_the_trigger(
    state: ConnectionState, content: str, expected: str
) -> None:
    assert envelope(message(state, content)).payload.text == expected


def test_attachments_become_placeholders(state: ConnectionState) -> None:
    def att(name: str, kind: str | None) -> dict[str, Any]:
        return {"id": "1", "filename": name, "size": 1, "url": "u", "proxy_url": "u", "content_type": kind}

    attachments = [
        att("a.png", "image/png"),
        att("b.mp4", "video/mp4"),
        att("c.ogg", "audio/ogg"),
        att("d.zip", None),
    ]
    assert envelope(message(state, "files:", attachments=attachments)).payload.text == (
        "files:\n[Image: a.png]\n[Video: b.mp4]\n[Audio: c.ogg]\n[File: d.zip]"
    )
    assert envelope(message(state, "", attachments=attachments[:1])).payload.text == "[Image: a.png]"


def test_empty_messages_are_skipped(state: ConnectionState) -> None:
    assert envelope(message(state, "")) is None


def test_reply_fields(state: ConnectionState) -> None:
    original = {
        "id": "1573686701925072000",
        "channel_id": str(CHANNEL),
        "author": user(702, "Bob"),
        "content": "the question",
        "timestamp": "2024-01-01T00:00:00+00:00",
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
    }
    msg = message(
        state,
        "the answer",
        type=19,
        message_reference={"message_id": original["id"], "channel_id": str(CHANNEL)},
        referenced_message=original,
    )
    p = envelope(msg).payload
    assert (p.reply_to_message_id, p.reply_to_message_content, p.reply_to_sender_name) == (
        f"dc:{CHANNEL}:{original['id']}",
        "the question",
        "Bob",
    )


def test_addresses() -> None:
    assert platform_channel("dc:123") == 123
    for bad in ("dc:", "dc:abc", "dc:-1", "tg:1", "local:main"):
        with pytest.raises(PermanentConnectorError):
            platform_channel(bad)


def test_cursors_are_durable_monotonic_and_forgettable(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    cursors = ChannelCursors(ConnectorState(path))
    cursors.remember(1, 100)
    assert cursors.get(1) == 99
    cursors.remember(1, 500)  # already known: unchanged
    cursors.advance(1, 100)
    cursors.advance(1, 50)  # never moves back
    assert ChannelCursors(ConnectorState(path)).all() == {1: 100}
    cursors.forget(1)
    assert cursors.get(1) is None


def test_cursor_files_written_before_the_state_helper_are_read_as_they_are(tmp_path: Path) -> None:
    """Existing installs keep their ``discord-cursors.db``: same name, same ``cursors`` table."""
    old = sqlite3.connect(tmp_path / "discord-cursors.db")
    old.execute("CREATE TABLE cursors (channel_id INTEGER PRIMARY KEY, message_id INTEGER NOT NULL)")
    old.execute("INSERT INTO cursors VALUES (?, ?)", (CHANNEL, MESSAGE))
    old.commit()
    old.close()
    dc = DiscordConnector.from_settings(settings(tmp_path, {"DISCORD_BOT_TOKEN": "t"}))
    assert dc.cursors.all() == {CHANNEL: MESSAGE}
    dc.cursors.advance(CHANNEL, MESSAGE + 1)
    dc.cursors.state.close()
    reread = sqlite3.connect(tmp_path / "discord-cursors.db")
    assert reread.execute("SELECT channel_id, message_id FROM cursors").fetchall() == [(CHANNEL, MESSAGE + 1)]
    reread.close()


def settings(tmp_path: Path, secrets: dict[str, str] | None = None, **options: Any) -> ConnectorSettings:
    return ConnectorSettings(
        name="discord",
        options={"enabled": True, **options},
        data_dir=tmp_path,
        assistant_name="Andy",
        secrets=Secrets(DiscordConnector.secrets, secrets),
    )


def test_from_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        DiscordConnector.from_settings(settings(tmp_path))
    assert caught.value.key == "DISCORD_BOT_TOKEN"
    dc = DiscordConnector.from_settings(settings(tmp_path, {"DISCORD_BOT_TOKEN": "s3cret"}))
    assert dc.cursors.state.path == tmp_path / "discord-cursors.db" and "s3cret" not in repr(dc)
    moved = DiscordConnector.from_settings(
        settings(tmp_path, {"DISCORD_BOT_TOKEN": "t"}, cursor_path=str(tmp_path / "elsewhere.db"))
    )
    assert moved.cursors.state.path == tmp_path / "elsewhere.db"
    with pytest.raises(ConfigError) as low:
        DiscordConnector.from_settings(
            settings(tmp_path, {"DISCORD_BOT_TOKEN": "t"}, max_ratelimit_timeout_s=5)
        )
    assert low.value.key == "connectors.discord.max_ratelimit_timeout_s"
    assert dc.api_base_url is None and dc.gateway_url is None  # Discord's own endpoints
    proxied = DiscordConnector.from_settings(
        settings(
            tmp_path,
            {"DISCORD_BOT_TOKEN": "t"},
            api_base_url="http://127.0.0.1:8080/api/v10/",
            gateway_url="ws://127.0.0.1:8081",
        )
    )
    assert (proxied.api_base_url, proxied.gateway_url) == (
        "http://127.0.0.1:8080/api/v10",
        "ws://127.0.0.1:8081",
    )
    for key, bad in (("api_base_url", "ws://x/api"), ("gateway_url", "gateway.example")):
        with pytest.raises(ConfigError) as wrong:
            DiscordConnector.from_settings(settings(tmp_path, {"DISCORD_BOT_TOKEN": "t"}, **{key: bad}))
        assert wrong.value.key == f"connectors.discord.{key}"


def response(status: int, **headers: str) -> Any:
    return SimpleNamespace(status=status, reason="x", headers=headers)


@pytest.mark.parametrize(
    ("exc", "kind", "retry_after"),
    [
        (discord.RateLimited(45.0), TransientConnectorError, 45.0),
        (
            discord.HTTPException(response(429, **{"Retry-After": "3"}), "banned?"),
            TransientConnectorError,
            3.0,
        ),
        (discord.DiscordServerError(response(503), "down"), TransientConnectorError, None),
        (
            discord.Forbidden(response(403), {"message": "Missing Access", "code": 50001}),
            PermanentConnectorError,
            None,
        ),
        (
            discord.NotFound(response(404), {"message": "Unknown Channel", "code": 10003}),
            PermanentConnectorError,
            None,
        ),
        (discord.HTTPException(response(400), "Invalid Form Body"), PermanentConnectorError, None),
        (discord.LoginFailure("Improper token has been passed."), PermanentConnectorError, None),
        (aiohttp.ClientConnectionError("reset"), TransientConnectorError, None),
        (TimeoutError(), TransientConnectorError, None),
    ],
)
def test_sdk_errors_are_translated(
    exc: Exception, kind: type, retry_after: float | None, tmp_path: Path
) -> None:
    dc = DiscordConnector("tok", assistant_name="Andy", state=ConnectorState(tmp_path / "c.db"))
    error = dc._translate(exc, "dc:1")
    assert type(error) is kind and error.retry_after == retry_after and error.chat_id == "dc:1"
