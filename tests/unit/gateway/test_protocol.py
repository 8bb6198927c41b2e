"""Frame validation: every hostile input is a ProtocolError with a stable code, nothing else."""

from __future__ import annotations

import json

import pytest

from microclaw.gateway.protocol import DeviceMessage, Hello, OtaResult, PairBegin, ProtocolError, parse_frame


def test_each_phase_accepts_only_its_frames() -> None:
    assert isinstance(parse_frame('{"type":"pair.begin","device_id":"desk-1"}', "pairing"), PairBegin)
    assert isinstance(
        parse_frame('{"type":"device.hello","device_id":"desk-1","last_seen_seq":3}', "hello"), Hello
    )
    assert isinstance(
        parse_frame('{"type":"message","message_id":"m1","text":"hi"}', "session"), DeviceMessage
    )
    for raw, phase in [
        ('{"type":"message","message_id":"m1","text":"hi"}', "pairing"),
        ('{"type":"pair.begin","device_id":"desk-1"}', "session"),
    ]:
        with pytest.raises(ProtocolError) as refused:
            parse_frame(raw, phase)  # type: ignore[arg-type]
        assert refused.value.code == "unexpected_type"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\x00\x01", "binary_unsupported"),
        ("{nope", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('{"text": "no type"}', "bad_frame"),
        ('{"type":"message","message_id":"m1","text":"hi","extra":1}', "bad_frame"),
        ('{"type":"message","message_id":"../etc","text":"hi"}', "bad_frame"),
        ('{"type":"message","message_id":"m1","text":""}', "bad_frame"),
        ('{"type":"message","message_id":"m1","text":"x","ts_ms":' + "9" * 5000 + "}", "bad_json"),
        ('{"type":"message","a":' + "[" * 5000 + "]" * 5000 + "}", "bad_json"),
        ('{"type":"message","a":' + "[" * 50 + "]" * 50 + "}", "bad_frame"),
        ('{"type":"message","message_id":"m1","text":"\\ud800"}', "bad_frame"),
    ],
)
def test_hostile_frames_are_protocol_errors(raw: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_frame(raw, "session")
    assert refused.value.code == code


def test_hello_rejects_a_bad_device_id_and_negative_seq() -> None:
    for hello in ({"device_id": "A B", "last_seen_seq": 0}, {"device_id": "desk-1", "last_seen_seq": -1}):
        with pytest.raises(ProtocolError):
            parse_frame(json.dumps({"type": "device.hello", **hello}), "hello")


def test_ota_results_are_validated_like_every_session_frame() -> None:
    good = {"type": "ota.result", "kind": "model", "version": "1.0.0", "ok": True}
    parsed = parse_frame(
        json.dumps({**good, "metrics": {"confirm_miss_rate": 0.1, "latency_ms": 40}}), "session"
    )
    assert isinstance(parsed, OtaResult) and parsed.metrics is not None
    assert parsed.metrics.model_dump(exclude_none=True) == {"confirm_miss_rate": 0.1, "latency_ms": 40}
    for bad in [
        {**good, "ok": "yes"},
        {**good, "kind": "bootloader"},
        {**good, "metrics": {"confirm_miss_rate": 1.5}},
        {**good, "metrics": {"latency_ms": -1}},
        {**good, "metrics": {"power": 3}},
        {**good, "reason": "x" * 300},
    ]:
        with pytest.raises(ProtocolError) as refused:
            parse_frame(json.dumps(bad), "session")
        assert refused.value.code == "bad_frame"
    with pytest.raises(ProtocolError):
        parse_frame(
            '{"type":"ota.result","kind":"model","version":"1.0.0","ok":true,"metrics":{"latency_ms":NaN}}',
            "session",
        )
