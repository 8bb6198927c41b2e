"""Contract §0.1 TIMEZONE: IANA validation and the fall-back to UTC."""

from __future__ import annotations

import pytest

from microclaw.core.timezones import is_valid_timezone, resolve_timezone


@pytest.mark.parametrize(
    "name", ["UTC", "Etc/UTC", "America/New_York", "Europe/Paris", "Asia/Kolkata", "EST5EDT"]
)
def test_valid_timezones(name: str) -> None:
    assert is_valid_timezone(name) is True
    assert resolve_timezone(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Not/AZone",
        "America",
        "utc",
        "America/New_York ",
        "/etc/localtime",
        "../etc/passwd",
        "Europe/Paris\x00",
    ],
)
def test_invalid_timezones(name: str) -> None:
    assert is_valid_timezone(name) is False
    assert resolve_timezone(name) == "UTC"


def test_none_resolves_to_utc() -> None:
    assert resolve_timezone(None) == "UTC"
