"""Shared fixtures: an isolated MicroClaw configuration per test (own data dir, own port)."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from microclaw.config import Settings, load_settings
from microclaw.store.db import create_sqlite_engine, migrate

# Keys a developer's shell may set that would leak into tests.
_SCRUB = (
    "MICROCLAW_",
    "ANTHROPIC_",
    "OPENAI_",
    "TELEGRAM_BOT_TOKEN",
    "DISCORD_BOT_TOKEN",
    "EMAIL_IMAP_PASSWORD",
    "EMAIL_SMTP_PASSWORD",
)


def free_port() -> int:
    """A loopback port nobody listens on, for a server a test starts in another process.

    Chosen below the kernel's ephemeral range (32768+), which outgoing connections draw their
    local ports from: a port taken from that range could be grabbed by some client's connect()
    between this check and the server's bind.
    """
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-32000")


def base_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Environment for a MicroClaw process rooted in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env.update(
        MICROCLAW_DATA_DIR=str(tmp_path / "data"),
        MICROCLAW_HTTP__PORT=str(free_port()),
        # The Procfile starts the device gateway too: its own port, loopback only, per test.
        MICROCLAW_GATEWAY__PORT=str(free_port()),
        MICROCLAW_GATEWAY__HOST="127.0.0.1",
        MICROCLAW_SENDER_ALLOWLIST_PATH=str(tmp_path / "sender-allowlist.json"),
        MICROCLAW_MOUNT_ALLOWLIST_PATH=str(tmp_path / "mount-allowlist.json"),
        MICROCLAW_LOGGING__LEVEL="INFO",
        MICROCLAW_TIMEZONE="UTC",
    )
    env.update(overrides)
    return env


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process's configuration at ``tmp_path`` (and chdir there, so no .env leaks in)."""
    env = base_env(tmp_path)
    for key in list(os.environ):
        if key.startswith(_SCRUB):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("MICROCLAW_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return env


@pytest.fixture
def settings(isolated_env: dict[str, str]) -> Settings:
    return load_settings()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = tmp_path / "app.db"
    migrate(db)
    eng = create_sqlite_engine(db)
    yield eng
    eng.dispose()


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run the test under the common umask 022 (files 0644 unless the code says otherwise)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def file_mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return path.stat().st_mode & 0o777
