"""The caller contract every registered connector keeps (one suite, every sibling).

What the host, the outbound worker and the boot report rely on: a class that names itself and
its address prefix, ``owns`` deciding by that prefix alone, a positive ``max_text_len``, the
secrets it reads declared in its own class body (the entry point reads exactly those), missing
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
from microclaw.connectors.base import BaseConnector, ConnectorSettings, Secrets, UndeclaredSecret
from microclaw.errors import ConfigError, ConnectorError
from microclaw.registry import load_class

# Settings a sibling needs besides its secrets before it can be built (loopback only).
PLATFORM_OPTIONS: dict[str, dict[str, Any]] = {
    "email": {"imap_host": "127.0.0.1", "imap_user": "assistant@example.test", "smtp_host": "127.0.0.1"},
}
# Siblings that cannot be built on some machines, and the reason they give there.
PLATFORM_REFUSALS: dict[str, str] = {"imessage": "unavailable: not macOS"}


def connector_class(name: str) -> type[BaseConnector]:
    return load_class(CONNECTORS, name, f"connectors.{name}")


def connector_settings(
    name: str, tmp_path: Path, *, secrets: bool = True, declared: tuple[str, ...] | None = None
) -> ConnectorSettings:
    """Settings for ``name`` with every secret it declares set (``secrets=False``: none set);
    ``declared`` overrides what the settings were built for."""
    names = connector_class(name).secrets if declared is None else declared
    return ConnectorSettings(
        name=name,
        options={"enabled": True, **PLATFORM_OPTIONS.get(name, {})},
        data_dir=tmp_path,
        assistant_name="Andy",
        secrets=Secrets(names, {k: f"test-{k.lower()}" for k in names} if secrets else {}),
    )


def from_settings(name: str, settings: ConnectorSettings) -> BaseConnector:
    """Build, skipping only where the platform itself is missing (e.g. iMessage off macOS)."""
    try:
        return connector_class(name).from_settings(settings)
    except ConfigError as exc:
        if name in PLATFORM_REFUSALS and str(exc) == PLATFORM_REFUSALS[name]:
            pytest.skip(f"{name} cannot be built on this machine: {exc}")
        raise


def build(name: str, tmp_path: Path) -> BaseConnector:
    return from_settings(name, connector_settings(name, tmp_path))


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


def test_secrets_are_declared_as_data_in_the_class_itself(name: str) -> None:
    """Not inherited and not listed elsewhere: the class body is where the entry point looks."""
    cls = connector_class(name)
    assert "secrets" in vars(cls), f"{cls.__name__} must declare `secrets` (`()` when it needs none)"
    assert isinstance(cls.secrets, tuple)
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", s) for s in cls.secrets), cls.secrets
    assert len(set(cls.secrets)) == len(cls.secrets)


def test_builds_from_its_declared_secrets_and_reads_no_others(name: str, tmp_path: Path) -> None:
    """Given exactly what it declares it builds; a secret it reads but did not declare fails
    loudly (`UndeclaredSecret`), never as a quiet "not configured" skip."""
    connector = build(name, tmp_path)
    asyncio.run(connector.close())
    if connector_class(name).secrets:
        with pytest.raises(UndeclaredSecret):
            from_settings(name, connector_settings(name, tmp_path, declared=()))


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
    """With none of its declared secrets set: a `ConfigError` naming one of them, or, for a
    connector that declares none, a connector all the same."""
    variables = connector_class(name).secrets
    settings = connector_settings(name, tmp_path, secrets=False)
    if not variables:
        asyncio.run(from_settings(name, settings).close())
        return
    with pytest.raises(ConfigError) as caught:
        from_settings(name, settings)
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
