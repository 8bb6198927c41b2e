"""Contract §1.3 and checklist 11.3: the sender allowlist file, its verdicts and drop-at-ingest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from microclaw.core.senders import (
    AllowEntry,
    SenderAllowlist,
    is_sender_allowed,
    is_trigger_allowed,
    load_sender_allowlist,
    should_drop_at_ingest,
    should_drop_message,
)

DEFAULTS = SenderAllowlist(default=AllowEntry(allow="*", mode="trigger"), chats={}, log_denied=True)


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "sender-allowlist.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# -- loading ----------------------------------------------------------------------------------


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load_sender_allowlist(tmp_path / "nope.json")
    assert cfg == DEFAULTS
    assert cfg.default.allow == "*"
    assert cfg.default.mode == "trigger"
    assert cfg.log_denied is True


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[]",
        "null",
        '"text"',
        json.dumps({"chats": {}}),  # no default
        json.dumps({"default": {"allow": "*"}}),  # no mode
        json.dumps({"default": {"allow": "*", "mode": "block"}}),  # bad mode
        json.dumps({"default": {"allow": "all", "mode": "trigger"}}),  # allow string other than "*"
        json.dumps({"default": {"allow": ["a", 1], "mode": "trigger"}}),  # non-string member
        json.dumps({"default": {"allow": None, "mode": "drop"}}),
        json.dumps({"default": ["*", "drop"], "logDenied": False}),
    ],
)
def test_invalid_file_or_default_gives_defaults(tmp_path: Path, content: str) -> None:
    assert load_sender_allowlist(write(tmp_path, content)) == DEFAULTS


def test_directory_instead_of_file_gives_defaults(tmp_path: Path) -> None:
    assert load_sender_allowlist(tmp_path) == DEFAULTS


def test_non_utf8_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "sender-allowlist.json"
    path.write_bytes(b"\xff\xfe{")
    assert load_sender_allowlist(path) == DEFAULTS


def test_valid_file_is_parsed(tmp_path: Path) -> None:
    cfg = load_sender_allowlist(
        write(
            tmp_path,
            {
                "default": {"allow": ["alice", "bob"], "mode": "trigger"},
                "chats": {
                    "tg:-100": {"allow": "*", "mode": "drop"},
                    "dc:7": {"allow": [], "mode": "trigger"},
                },
                "logDenied": False,
            },
        )
    )
    assert cfg.default == AllowEntry(allow=("alice", "bob"), mode="trigger")
    assert dict(cfg.chats) == {
        "tg:-100": AllowEntry(allow="*", mode="drop"),
        "dc:7": AllowEntry(allow=(), mode="trigger"),
    }
    assert cfg.log_denied is False


def test_invalid_chat_entries_are_skipped_and_others_kept(tmp_path: Path) -> None:
    cfg = load_sender_allowlist(
        write(
            tmp_path,
            {
                "default": {"allow": "*", "mode": "trigger"},
                "chats": {
                    "good": {"allow": ["alice"], "mode": "drop"},
                    "bad-mode": {"allow": "*", "mode": "mute"},
                    "bad-allow": {"allow": [1, 2], "mode": "drop"},
                    "not-object": "drop",
                    "missing-allow": {"mode": "drop"},
                },
            },
        )
    )
    assert dict(cfg.chats) == {"good": AllowEntry(allow=("alice",), mode="drop")}
    # a skipped chat falls back to the default entry
    assert should_drop_message("bad-mode", cfg) is False
    assert is_sender_allowed("bad-allow", "anyone", cfg) is True


@pytest.mark.parametrize(
    ("log_denied", "expected"),
    [(False, False), (True, True), (0, True), ("false", True), (None, True), ("missing", True)],
)
def test_log_denied_is_false_only_when_literally_false(
    tmp_path: Path, log_denied: Any, expected: bool
) -> None:
    data: dict[str, Any] = {"default": {"allow": "*", "mode": "trigger"}}
    if log_denied != "missing":
        data["logDenied"] = log_denied
    assert load_sender_allowlist(write(tmp_path, data)).log_denied is expected


def test_non_object_chats_are_ignored(tmp_path: Path) -> None:
    cfg = load_sender_allowlist(write(tmp_path, {"default": {"allow": "*", "mode": "drop"}, "chats": ["x"]}))
    assert dict(cfg.chats) == {}
    assert cfg.default.mode == "drop"


def test_no_caching_edits_take_effect_on_next_load(tmp_path: Path) -> None:
    path = write(tmp_path, {"default": {"allow": "*", "mode": "trigger"}})
    assert should_drop_message("c", load_sender_allowlist(path)) is False
    write(tmp_path, {"default": {"allow": ["alice"], "mode": "drop"}})
    assert should_drop_message("c", load_sender_allowlist(path)) is True
    path.unlink()
    assert load_sender_allowlist(path) == DEFAULTS


def test_config_is_immutable() -> None:
    cfg = SenderAllowlist(chats={"c": AllowEntry(allow=["a"], mode="drop")})  # type: ignore[arg-type]
    assert cfg.chats["c"].allow == ("a",)
    with pytest.raises(AttributeError):
        cfg.log_denied = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.chats["d"] = AllowEntry(allow="*", mode="trigger")  # type: ignore[index]


@pytest.mark.parametrize(("allow", "mode"), [("all", "trigger"), (("a",), "mute"), (("a", 1), "drop")])
def test_allow_entry_rejects_invalid_values(allow: Any, mode: Any) -> None:
    with pytest.raises(ValueError):
        AllowEntry(allow=allow, mode=mode)


# -- verdicts ---------------------------------------------------------------------------------

CFG = SenderAllowlist(
    default=AllowEntry(allow=("alice",), mode="trigger"),
    chats={
        "open": AllowEntry(allow="*", mode="drop"),
        "closed": AllowEntry(allow=(), mode="trigger"),
        "strict": AllowEntry(allow=("bob",), mode="drop"),
    },
)


@pytest.mark.parametrize(
    ("chat", "sender", "expected"),
    [
        ("other", "alice", True),  # default entry
        ("other", "bob", False),
        ("other", "Alice", False),  # exact match, case-sensitive
        ("other", "alice ", False),
        ("open", "anyone", True),  # "*" allows everyone
        ("closed", "alice", False),  # [] denies everyone, even senders the default allows
        ("closed", "", False),
        ("strict", "bob", True),  # the chat entry overrides the default
        ("strict", "alice", False),
    ],
)
def test_is_sender_allowed(chat: str, sender: str, expected: bool) -> None:
    assert is_sender_allowed(chat, sender, CFG) is expected
    assert is_trigger_allowed(chat, sender, CFG) is expected


def test_defaults_allow_everyone_to_trigger() -> None:
    assert is_trigger_allowed("any", "anyone", DEFAULTS) is True
    assert should_drop_message("any", DEFAULTS) is False


@pytest.mark.parametrize(
    ("chat", "expected"), [("other", False), ("open", True), ("closed", False), ("strict", True)]
)
def test_should_drop_message_follows_effective_mode(chat: str, expected: bool) -> None:
    assert should_drop_message(chat, CFG) is expected


def test_drop_mode_default_applies_to_chats_without_entry() -> None:
    cfg = SenderAllowlist(default=AllowEntry(allow=("alice",), mode="drop"))
    assert should_drop_message("x", cfg) is True


# -- drop at ingestion ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chat", "sender", "is_from_me", "is_bot_message", "registered", "expected"),
    [
        ("strict", "mallory", False, False, True, True),  # all conditions hold: dropped, never stored
        ("strict", "bob", False, False, True, False),  # allowed sender
        ("strict", "mallory", True, False, True, False),  # from me
        ("strict", "mallory", False, True, True, False),  # bot message
        ("strict", "mallory", False, False, False, False),  # unregistered chat
        ("other", "mallory", False, False, True, False),  # trigger mode: stored as context
        ("closed", "mallory", False, False, True, False),  # trigger mode even though [] denies all
        ("open", "mallory", False, False, True, False),  # drop mode but "*" allows
    ],
)
def test_should_drop_at_ingest(
    chat: str, sender: str, is_from_me: bool, is_bot_message: bool, registered: bool, expected: bool
) -> None:
    verdict = should_drop_at_ingest(
        chat, sender, is_from_me=is_from_me, is_bot_message=is_bot_message, registered=registered, cfg=CFG
    )
    assert verdict is expected
