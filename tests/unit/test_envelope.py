from __future__ import annotations

import json

import pytest

from microclaw.envelope import parse_envelope
from microclaw.errors import EnvelopeError


def good(**changes: object) -> dict:
    env = {
        "v": 1,
        "seq": 3,
        "ts_ms": 1_700_000_000_123,
        "source": "local",
        "device_id": None,
        "session_id": None,
        "message_id": "local:main:1",
        "payload": {"chat_id": "local:main", "sender": "u1", "sender_name": "Ann", "text": "hi"},
    }
    env.update(changes)
    return env


def test_accepts_bytes_str_and_mapping() -> None:
    for raw in (good(), json.dumps(good()), json.dumps(good()).encode()):
        env = parse_envelope(raw)
        assert env.message_id == "local:main:1"
        assert env.chat_id == "local:main"
        assert env.timestamp_iso == "2023-11-14T22:13:20.123Z"


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        ({k: v for k, v in good().items() if k != "message_id"}, "message_id", "missing"),
        (good(v=2), "v", "unsupported envelope version 2"),
        (good(v="1"), "v", "unsupported"),
        ({k: v for k, v in good().items() if k != "v"}, "v", "missing"),
        (good(seq=-1), "seq", "greater than or equal"),
        (good(extra=1), "extra", "not permitted"),
        (good(source="Tele gram"), "source", "pattern"),
        (good(payload={"text": "x"}), "payload.chat_id", "missing"),
        (good(payload={"chat_id": "c", "text": 5}), "payload.text", "string"),
        (good(payload={"chat_id": "c", "text": "\ud800"}), "payload.text", "UTF-8"),
    ],
)
def test_rejects_malformed_envelopes_naming_the_field(raw: dict, field: str, fragment: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_envelope(raw)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_rejects_oversized_text_with_byte_count() -> None:
    text = "é" * 40  # 80 bytes in UTF-8
    with pytest.raises(EnvelopeError, match="80 bytes; the limit is 64") as info:
        parse_envelope(good(payload={"chat_id": "c", "text": text}), max_text_bytes=64)
    assert info.value.field == "payload.text"
    assert info.value.message_id == "local:main:1"
    assert parse_envelope(good(payload={"chat_id": "c", "text": "é" * 32}), max_text_bytes=64)


def test_rejects_non_utf8_bytes_and_non_json() -> None:
    with pytest.raises(EnvelopeError, match="not valid UTF-8"):
        parse_envelope(b'{"v": 1, "text": "\xff\xfe"}')
    with pytest.raises(EnvelopeError, match="not JSON"):
        parse_envelope("{nope")
    with pytest.raises(EnvelopeError, match="JSON object"):
        parse_envelope("[1, 2]")


DEEP_JSON = '{"v": 1, "payload": ' + "[" * 100_000 + "]" * 100_000 + "}"
HUGE_INT_JSON = '{"v": 1, "seq": ' + "9" * 5000 + "}"


def _nested(depth: int) -> dict:
    inner: dict = {}
    for _ in range(depth):
        inner = {"a": inner}
    return inner


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (DEEP_JSON, "nested too deeply"),
        (DEEP_JSON.encode(), "nested too deeply"),
        (HUGE_INT_JSON, "digits"),
        (HUGE_INT_JSON.encode(), "digits"),
        ({"v": 10**5000}, "a very large integer"),
        (good(payload=_nested(5000)), "nested too deeply"),
        (good(extra=[[[[[[[[[[[]]]]]]]]]]]), "nested too deeply"),
        (good(seq=10**30), "seq"),
        (good(seq=2**63), "seq"),
        (good(ts_ms=10**20), "ts_ms"),
    ],
    ids=[
        "deep-json-text",
        "deep-json-bytes",
        "huge-int-text",
        "huge-int-bytes",
        "huge-version",
        "deep-mapping",
        "deep-list",
        "seq-past-int64",
        "seq-2**63",
        "ts-past-year-9999",
    ],
)
def test_hostile_input_is_an_envelope_error_not_a_crash(raw: object, fragment: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(raw, max_text_bytes=1024 * 1024)  # type: ignore[arg-type]
    assert fragment in str(caught.value)


def test_the_largest_valid_numbers_are_still_accepted() -> None:
    env = parse_envelope(good(seq=2**63 - 1, ts_ms=253_402_300_799_999))
    assert env.timestamp_iso == "9999-12-31T23:59:59.999Z"
