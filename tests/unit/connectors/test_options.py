"""`number_option`: the numeric connector settings every platform connector reads."""

from __future__ import annotations

import pytest

from microclaw.connectors.base import number_option
from microclaw.errors import ConfigError


def test_absent_uses_the_default_and_strings_from_the_environment_are_numbers() -> None:
    assert number_option({}, "telegram", "poll_timeout_s", 30.0) == 30.0
    assert number_option({"poll_timeout_s": "2.5"}, "telegram", "poll_timeout_s", 30.0) == 2.5


@pytest.mark.parametrize(("value", "message"), [("soon", "expected a number"), ("", "expected a number")])
def test_not_a_number_names_the_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        number_option({"poll_timeout_s": value}, "telegram", "poll_timeout_s", 30.0)
    assert caught.value.key == "connectors.telegram.poll_timeout_s"


def test_below_the_minimum_names_the_key_and_the_bound() -> None:
    with pytest.raises(ConfigError, match=r"must be >= 30.0, got 5.0") as caught:
        number_option({"max_ratelimit_timeout_s": 5}, "discord", "max_ratelimit_timeout_s", 30, minimum=30.0)
    assert caught.value.key == "connectors.discord.max_ratelimit_timeout_s"


def test_blank_means_the_default_only_where_asked() -> None:
    assert number_option({"imap_port": ""}, "email", "imap_port", 0, blank_is_default=True) == 0
    assert number_option({"timeout_s": None}, "email", "timeout_s", 30.0, blank_is_default=True) == 30.0
