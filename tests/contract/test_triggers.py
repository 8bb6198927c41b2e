"""Contract §1.1-1.2 and checklist 11.1-11.3: the trigger regex, who needs a trigger, who may fire it."""

from __future__ import annotations

import re

import pytest

from microclaw.core.senders import AllowEntry, SenderAllowlist, is_trigger_allowed
from microclaw.core.triggers import (
    build_trigger_pattern,
    group_trigger_pattern,
    is_trigger_message,
    needs_trigger,
)


def matches(pattern: re.Pattern[str], text: str) -> bool:
    return pattern.search(text.strip()) is not None


@pytest.mark.parametrize(
    "text",
    ["@Andy", "@andy hi", "@ANDY hi", "@Andy's thing", "@Andy, what time is it?", "@Andy\nsecond line"],
)
def test_default_trigger_matches_at_start_case_insensitively(text: str) -> None:
    assert matches(build_trigger_pattern("@Andy"), text)


@pytest.mark.parametrize(
    "text",
    ["hello @Andy", "@Andyextra", "@Andyx", "@Andy_bot", "@Andy1", "Andy hi", "@And", "", " x @Andy"],
)
def test_default_trigger_rejects(text: str) -> None:
    assert not matches(build_trigger_pattern("@Andy"), text)


def test_pattern_is_anchored_and_case_insensitive() -> None:
    pattern = build_trigger_pattern("@Andy")
    assert pattern.pattern == r"^@Andy\b"
    assert pattern.flags & re.IGNORECASE


def test_trigger_is_trimmed_before_building() -> None:
    assert build_trigger_pattern("  @Andy  ").pattern == r"^@Andy\b"
    assert matches(build_trigger_pattern("  @Andy  "), "@andy hello")


def test_custom_trigger_is_literal_not_a_regex() -> None:
    pattern = build_trigger_pattern("@C.L.A.U.D.E")
    assert matches(pattern, "@C.L.A.U.D.E do this")
    assert matches(pattern, "@c.l.a.u.d.e do this")
    assert not matches(pattern, "@CxLxAxUxDxE do this")
    assert not matches(pattern, "@CLAUDE do this")


@pytest.mark.parametrize(
    ("trigger", "literal_use", "regex_reading"),
    [
        ("$bot", "$bot hi", "bot hi"),
        ("^bot", "^bot hi", "bot hi"),
        ("a+b", "a+b hi", "aab hi"),
        ("a?b", "a?b hi", "b hi"),
        ("x|y", "x|y hi", "y hi"),
        ("[ai]", "[ai]go", "a go"),
        ("(ai)", "(ai)go", "ai go"),
        ("{hi}", "{hi}go", "hi go"),
        ("back\\slash", "back\\slash hi", "backslash hi"),
    ],
)
def test_regex_metacharacters_are_escaped(trigger: str, literal_use: str, regex_reading: str) -> None:
    pattern = build_trigger_pattern(trigger)
    assert matches(pattern, literal_use)
    assert not matches(pattern, regex_reading)


def test_trigger_ending_in_punctuation_keeps_reference_word_boundary() -> None:
    # Reference semantics: \b after a non-word character needs a word character next.
    pattern = build_trigger_pattern("!bot!")
    assert matches(pattern, "!bot!go")
    assert not matches(pattern, "!bot! go")
    assert not matches(pattern, "!bot!")


def test_content_is_trimmed_before_matching() -> None:
    assert is_trigger_message(
        "   @Andy hi  ", build_trigger_pattern("@Andy"), is_from_me=False, trigger_allowed=True
    )
    assert is_trigger_message(
        "\n\t@Andy", build_trigger_pattern("@Andy"), is_from_me=False, trigger_allowed=True
    )


def test_group_trigger_overrides_default() -> None:
    pattern = group_trigger_pattern("@Claw", "@Andy")
    assert matches(pattern, "@Claw hi")
    assert not matches(pattern, "@Andy hi")


@pytest.mark.parametrize("group_trigger", [None, "", "   "])
def test_empty_group_trigger_falls_back_to_default(group_trigger: str | None) -> None:
    pattern = group_trigger_pattern(group_trigger, "@Andy")
    assert pattern.pattern == r"^@Andy\b"
    assert matches(pattern, "@Andy hi")


@pytest.mark.parametrize(
    ("is_main", "requires_trigger", "expected"),
    [
        (True, True, False),  # main never needs a trigger, even when requires_trigger is set
        (True, None, False),
        (True, False, False),
        (False, None, True),  # undefined / NULL counts as required
        (False, True, True),
        (False, False, False),  # requires_trigger false: every message is processed
        (False, 1, True),  # database integers
        (False, 0, False),
    ],
)
def test_needs_trigger(is_main: bool, requires_trigger: bool | None, expected: bool) -> None:
    assert needs_trigger(is_main, requires_trigger) is expected


@pytest.mark.parametrize(
    ("content", "is_from_me", "trigger_allowed", "expected"),
    [
        ("@Andy hi", False, True, True),
        ("@Andy hi", False, False, False),  # non-allowlisted sender cannot trigger
        ("@Andy hi", True, False, True),  # is_from_me always can
        ("@Andy hi", True, True, True),
        ("hi @Andy", True, True, False),  # from me but no trigger
        ("", True, True, False),
        (None, True, True, False),
    ],
)
def test_is_trigger_message(
    content: str | None, is_from_me: bool, trigger_allowed: bool, expected: bool
) -> None:
    pattern = build_trigger_pattern("@Andy")
    assert (
        is_trigger_message(content, pattern, is_from_me=is_from_me, trigger_allowed=trigger_allowed)
        is expected
    )


def test_trigger_with_sender_allowlist_end_to_end() -> None:
    cfg = SenderAllowlist(chats={"tg:1": AllowEntry(allow=("alice",), mode="trigger")})
    pattern = build_trigger_pattern("@Andy")

    def fires(sender: str, *, is_from_me: bool = False) -> bool:
        allowed = is_trigger_allowed("tg:1", sender, cfg)
        return is_trigger_message("@Andy go", pattern, is_from_me=is_from_me, trigger_allowed=allowed)

    assert fires("alice")
    assert not fires("mallory")
    assert fires("mallory", is_from_me=True)
