"""The caller contract every registered connector keeps (one suite, every sibling).

What the host, the outbound worker and the boot report rely on: a class that names itself and
its address prefix, ``owns`` deciding by that prefix alone, a positive ``max_text_len``, missing
credentials reported as `ConfigError` naming the key (so the boot skips the connector with a
warning), and ``send`` refusing an address it does not own with a `ConnectorError` (never an SDK
exception). No test here opens a network connection beyond loopback.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from microclaw.connectors import CONNECTORS
from microclaw.connectors.base import BaseConnector, ConnectorSettings
from microclaw.errors import ConfigError, ConnectorError
from microclaw.registry import load_class
from microclaw.runtime.wiring import CONNECTOR_SECRETS

# Settings a sibling needs besides its secrets before it can be built (loopback only).
PLATFORM_OPTIONS: dict[str, dict[str, Any]] = {
    "email": {"imap_host": "127.0.0.1", "imap_user": "assistant@example.test", "smtp_host": "127.0.0.1"},
}
# Siblings that accept any address today (their send stores into a local mailbox).


def connector_class(name: str) -> type[BaseConnector]:
    return load_class(CONNECTORS, name, f"connectors.{name}")


def connector_settings(name: str, tmp_path: Path, *, secrets: bool = True) -> ConnectorSettings:
    return ConnectorSettings(
        name=name,
        options={"enabled": True, **PLATFORM_OPTIONS.get(name, {})},
        data_dir=tmp_path,
        assistant_name="Andy",
        secrets={k: f"test-{k.lower()}" for k in CONNECTOR_SECRETS.get(name, ())} if secrets else {},
    )


def build(name: str, tmp_path: Path) -> BaseConnector:
    try:
        return connector_class(name).from_settings(connector_settings(name, tmp_path))
    except ConfigError as exc:  # e.g. iMessage off macOS: reported, not built
        pytest.skip(f"{name} cannot be built on this machine: {exc}")


@pytest.fixture(params=sorted(CONNECTORS))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_class_names_itself_its_prefix_and_its_limit(name: str) -> None:
    cls = connector_class(name)
    assert issubclass(cls, BaseConnector) and cls.name == name
    assert re.fullmatch(r"[a-z][a-z0-9]*", cls.prefix)
    assert isinstance(cls.max_text_len, int) and 0 < cls.max_text_len <= 65536
    assert isinstance(cls.idempotent_send, bool)
    assert "capability card" in (sys.modules[cls.__module__].__doc__ or "").lower()


def test_prefixes_are_unique() -> None:
    prefixes = [connector_class(n).prefix for n in CONNECTORS]
    assert len(prefixes) == len(set(prefixes))


def test_owns_exactly_its_own_addresses(name: str, tmp_path: Path) -> None:
    connector = build(name, tmp_path)
    assert connector.owns(f"{connector.prefix}:123")
    assert not connector.owns(f"{connector.prefix}123")
    for other in CONNECTORS:
        prefix = connector_class(other).prefix
        if other != name:
            assert not connector.owns(f"{prefix}:123"), f"{name} claims {other}'s address"


def test_missing_credentials_are_a_config_error_naming_the_key(name: str, tmp_path: Path) -> None:
    variables = CONNECTOR_SECRETS.get(name, ())
    if not variables:
        pytest.skip(f"{name} needs no credentials")
    with pytest.raises(ConfigError) as caught:
        connector_class(name).from_settings(connector_settings(name, tmp_path, secrets=False))
    assert caught.value.key in variables and caught.value.key in str(caught.value)


def test_send_to_an_address_it_does_not_own_is_a_connector_error(name: str, tmp_path: Path) -> None:
    connector = build(name, tmp_path)

    async def attempt() -> None:
        try:
            await asyncio.wait_for(connector.send("nobody:1", "hello", idempotency_key="k"), timeout=15)
        finally:
            await connector.close()

    with pytest.raises(ConnectorError):
        asyncio.run(attempt())
