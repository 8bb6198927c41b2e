"""`BaseConnector.check()` and `doctor`'s connector line against a fake Bot API on loopback."""

from __future__ import annotations

import asyncio

import pytest

from microclaw.config import load_settings
from microclaw.connectors.telegram import TelegramConnector
from microclaw.errors import PermanentConnectorError
from microclaw.runtime import doctor
from tests.integration.connectors.fake_telegram import BOT_USERNAME, FakeTelegram


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
