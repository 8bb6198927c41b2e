"""Connector boot: enabled ones built, disabled and unconfigured ones skipped with a reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar, Self

import pytest

from microclaw import connectors as registry
from microclaw.config import load_settings
from microclaw.connectors.base import BaseConnector, ConnectorSettings
from microclaw.errors import ConfigError
from microclaw.runtime.wiring import (
    app_engine,
    bootstrap_database,
    build_connectors,
    connector_settings,
    make_group_folder,
)
from microclaw.store import audit
from microclaw.store.db import read_tx


class NeedsToken(BaseConnector):
    """A tiny sibling that, like a real platform connector, refuses to start without a token."""

    name: ClassVar[str] = "needs_token"
    prefix: ClassVar[str] = "nt"
    secrets: ClassVar[tuple[str, ...]] = ("NEEDS_TOKEN_TOKEN",)

    def __init__(self, token: str = "") -> None:
        self.token = token

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        token = settings.secrets.get("NEEDS_TOKEN_TOKEN", "")
        if not token:
            raise ConfigError("NEEDS_TOKEN_TOKEN is not set", key="NEEDS_TOKEN_TOKEN")
        return cls(token)

    async def listen(self, deliver):  # pragma: no cover - never started here
        raise NotImplementedError

    async def send(self, chat_id: str, text: str, *, idempotency_key: str) -> str:  # pragma: no cover
        raise NotImplementedError


class Explodes(NeedsToken):
    name: ClassVar[str] = "explodes"

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        raise RuntimeError("library not importable")


class ForgotToDeclare(NeedsToken):
    """Reads the token but declares nothing: the bug a central list of secrets used to hide."""

    name: ClassVar[str] = "forgot"
    secrets: ClassVar[tuple[str, ...]] = ()


def test_missing_credentials_skip_only_that_connector(isolated_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.CONNECTORS, "needs_token", f"{__name__}:NeedsToken")
    monkeypatch.setitem(registry.CONNECTORS, "explodes", f"{__name__}:Explodes")
    monkeypatch.setenv("MICROCLAW_CONNECTORS__NEEDS_TOKEN__ENABLED", "true")
    monkeypatch.setenv("MICROCLAW_CONNECTORS__EXPLODES__ENABLED", "true")
    boots = {b.name: b for b in build_connectors(load_settings())}
    assert boots["local"].state == "active" and boots["local"].connector is not None
    assert boots["fake"].state == "skipped" and boots["fake"].detail == "disabled in settings"
    assert boots["needs_token"].state == "skipped" and "TOKEN is not set" in boots["needs_token"].detail
    assert boots["explodes"].state == "error" and "library not importable" in boots["explodes"].detail


def test_the_secrets_a_connector_declares_are_read_from_the_environment(
    isolated_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.CONNECTORS, "needs_token", f"{__name__}:NeedsToken")
    monkeypatch.setenv("MICROCLAW_CONNECTORS__NEEDS_TOKEN__ENABLED", "true")
    monkeypatch.setenv("NEEDS_TOKEN_TOKEN", "t0k")
    boot = {b.name: b for b in build_connectors(load_settings())}["needs_token"]
    assert boot.state == "active" and isinstance(boot.connector, NeedsToken)
    assert boot.connector.token == "t0k"
    settings = connector_settings(
        load_settings(), "needs_token", NeedsToken, {"NEEDS_TOKEN_TOKEN": "x", "OTHER": "y"}
    )
    assert settings.secrets.declared == ("NEEDS_TOKEN_TOKEN",) and dict(settings.secrets) == {
        "NEEDS_TOKEN_TOKEN": "x"
    }


def test_reading_an_undeclared_secret_is_an_error_at_boot_not_a_skip(
    isolated_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.CONNECTORS, "forgot", f"{__name__}:ForgotToDeclare")
    monkeypatch.setenv("MICROCLAW_CONNECTORS__FORGOT__ENABLED", "true")
    monkeypatch.setenv("NEEDS_TOKEN_TOKEN", "t0k")  # set, yet never handed to a connector not declaring it
    boot = {b.name: b for b in build_connectors(load_settings())}["forgot"]
    assert boot.state == "error" and boot.detail.startswith("UndeclaredSecret:")
    assert "NEEDS_TOKEN_TOKEN" in boot.detail and "t0k" not in boot.detail


def test_skips_are_warnings_for_the_host_and_debug_in_worker_children(
    isolated_env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(registry.CONNECTORS, "needs_token", f"{__name__}:NeedsToken")
    monkeypatch.setenv("MICROCLAW_CONNECTORS__NEEDS_TOKEN__ENABLED", "true")
    caplog.set_level("DEBUG", logger="microclaw.runtime.wiring")
    build_connectors(load_settings())
    build_connectors(load_settings(), quiet=True)
    levels = [r.levelname for r in caplog.records if "needs_token skipped" in r.getMessage()]
    assert levels == ["WARNING", "DEBUG"]


def test_unknown_connector_name_fails_listing_known_ones(isolated_env, monkeypatch) -> None:
    monkeypatch.setenv("MICROCLAW_CONNECTORS__TELEPATHY__ENABLED", "true")
    with pytest.raises(ConfigError, match="unknown name 'telepathy'; known: 'local', 'fake'"):
        build_connectors(load_settings())


def test_every_registered_connector_imports() -> None:
    from microclaw.registry import load_class

    for name in registry.CONNECTORS:
        assert issubclass(load_class(registry.CONNECTORS, name, "x"), BaseConnector)


def test_bootstrap_never_creates_the_local_group_folder_through_a_link(
    isolated_env, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("MICROCLAW_CONNECTORS__LOCAL__ENABLED", "true")
    settings = load_settings()
    settings.groups_dir.mkdir(parents=True)
    (settings.groups_dir / "local_main").symlink_to(tmp_path / "outside" / "made-by-host")
    bootstrap_database(settings)  # the boot goes on
    assert not (tmp_path / "outside").exists()
    engine = app_engine(settings)
    try:
        with read_tx(engine) as conn:
            [row] = audit.recent(conn, kind="fs.refused")
        assert row["detail"] == {
            "group": "local_main",
            "use": "group folder",
            "path": "local_main",
            "problem": "is a symbolic link",
        }
        assert make_group_folder(engine, settings.groups_dir, "other")
        assert (settings.groups_dir / "other").is_dir()
    finally:
        engine.dispose()


def test_connectors_skipped_for_want_of_credentials_load_no_platform_library(tmp_path: Path) -> None:
    """The default settings enable email, Telegram and Discord, skipped until credentials are set:
    a host without them must not pay for importing their libraries (IMAP, lxml, the bots' SDKs)."""
    heavy = ("imapclient", "lxml", "html_text", "mailparser_reply", "telegram", "discord")
    code = (
        "import sys\n"
        "from microclaw.config import load_settings\n"
        "from microclaw.runtime.wiring import build_connectors\n"
        "boots = {b.name: b.state for b in build_connectors(load_settings(), quiet=True)}\n"
        "print(boots['email'], boots['telegram'], boots['discord'])\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MICROCLAW_", "EMAIL_", "TELEGRAM_", "DISCORD_"))
    }
    env["MICROCLAW_DATA_DIR"] = str(tmp_path / "data")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[3],
    ).stdout.splitlines()
    assert out == ["skipped skipped skipped", "[]"]
