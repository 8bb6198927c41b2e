"""`BaseConnector.check()` and `doctor`'s connector line: Telegram and Discord against fake
platforms on loopback, Email against a real Dovecot (IMAP) and aiosmtpd (SMTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from microclaw.config import load_settings
from microclaw.connectors.discord import DiscordConnector
from microclaw.connectors.state import ConnectorState
from microclaw.connectors.telegram import TelegramConnector
from microclaw.errors import PermanentConnectorError
from microclaw.runtime import doctor
from tests.integration.connectors.dovecot import PASSWORD, Dovecot, Mailroom, start_dovecot
from tests.integration.connectors.fake_discord import BOT_ID, FakeDiscord
from tests.integration.connectors.fake_telegram import BOT_USERNAME, FakeTelegram
from tests.integration.connectors.test_email import connector_for


def test_telegram_check_proves_the_token_by_get_me(fake_telegram: FakeTelegram) -> None:
    good = TelegramConnector(fake_telegram.token, assistant_name="Andy", base_url=fake_telegram.base_url)
    assert asyncio.run(good.check()) == f"token accepted: bot @{BOT_USERNAME}"
    bad = TelegramConnector("999:wrong", assistant_name="Andy", base_url=fake_telegram.base_url)
    with pytest.raises(PermanentConnectorError):
        asyncio.run(bad.check())


def test_doctor_fails_a_telegram_token_the_platform_refuses(
    fake_telegram: FakeTelegram, isolated_env, monkeypatch
) -> None:
    monkeypatch.setenv("MICROCLAW_CONNECTORS__TELEGRAM__ENABLED", "true")
    monkeypatch.setenv("MICROCLAW_CONNECTORS__TELEGRAM__BASE_URL", fake_telegram.base_url)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", fake_telegram.token)
    ok = {c.name: c for c in doctor.run_checks(load_settings())}["connector telegram"]
    assert ok.ok is True and BOT_USERNAME in ok.detail
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "999:revoked")
    bad = {c.name: c for c in doctor.run_checks(load_settings())}["connector telegram"]
    assert bad.ok is False and "credentials" in bad.fix
    assert "999:revoked" not in bad.detail  # the token never appears in the report


def discord_connector(fake: FakeDiscord, token: str, tmp_path: Path) -> DiscordConnector:
    return DiscordConnector(
        token,
        assistant_name="Andy",
        state=ConnectorState(tmp_path / "discord-cursors.db"),
        api_base_url=fake.api_base,
    )


def test_discord_check_proves_the_token_by_users_me(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    async def check(token: str) -> str | None:
        connector = discord_connector(fake_discord, token, tmp_path)
        try:
            return await connector.check()
        finally:
            await connector.close()

    said = asyncio.run(check(fake_discord.token))
    assert said and str(BOT_ID) in said
    assert [r for m, r, _ in fake_discord.requests("GET")] == ["/users/@me"]  # one call, no gateway
    with pytest.raises(PermanentConnectorError, match="DISCORD_BOT_TOKEN") as refused:
        asyncio.run(check("wrong-discord-token"))
    assert "wrong-discord-token" not in str(refused.value)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = start_dovecot()
    yield server
    server.stop()


def test_email_check_logs_in_to_imap_and_smtp(dovecot: Dovecot, tmp_path: Path) -> None:
    room = Mailroom(dovecot, login=("andy-smtp", "smtp-secret"))
    try:

        def check(tmp: Path, imap_password: str, smtp_password: str) -> str | None:
            tmp.mkdir()
            secrets = {"EMAIL_IMAP_PASSWORD": imap_password, "EMAIL_SMTP_PASSWORD": smtp_password}
            connector = connector_for(tmp, dovecot, room, secrets, smtp_user="andy-smtp")
            try:
                return asyncio.run(connector.check())
            finally:
                asyncio.run(connector.close())

        said = check(tmp_path / "good", PASSWORD, "smtp-secret")
        assert said and "IMAP login accepted" in said and "SMTP login accepted for andy-smtp" in said

        with pytest.raises(PermanentConnectorError, match="IMAP login refused") as imap:
            check(tmp_path / "bad-imap", "wrong-imap-password", "smtp-secret")
        assert f"127.0.0.1:{dovecot.port}" in str(imap.value)
        assert "wrong-imap-password" not in str(imap.value)

        with pytest.raises(PermanentConnectorError, match="SMTP login refused") as smtp:
            check(tmp_path / "bad-smtp", PASSWORD, "wrong-smtp-password")
        assert f"127.0.0.1:{room.port}" in str(smtp.value)
        assert "wrong-smtp-password" not in str(smtp.value)
        assert room.captured == []  # a check sends no mail
    finally:
        room.stop()


def test_doctor_fails_a_discord_token_the_platform_refuses(
    fake_discord: FakeDiscord, isolated_env, monkeypatch
) -> None:
    monkeypatch.setenv("MICROCLAW_CONNECTORS__DISCORD__ENABLED", "true")
    monkeypatch.setenv("MICROCLAW_CONNECTORS__DISCORD__API_BASE_URL", fake_discord.api_base)
    monkeypatch.setenv("DISCORD_BOT_TOKEN", fake_discord.token)
    ok = {c.name: c for c in doctor.run_checks(load_settings())}["connector discord"]
    assert ok.ok is True and str(BOT_ID) in ok.detail
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "revoked-discord-token")
    bad = {c.name: c for c in doctor.run_checks(load_settings())}["connector discord"]
    assert bad.ok is False and "credentials" in bad.fix and "DISCORD_BOT_TOKEN" in bad.detail
    assert "revoked-discord-token" not in bad.detail  # the token never appears in the report
