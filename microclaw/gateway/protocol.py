"""The device protocol's frames: shapes, limits and validation (docs/device-protocol.md).

Text frames are JSON objects with a ``type``. `parse_frame` turns raw input into one frozen,
validated model or raises `ProtocolError` with a stable ``code`` the gateway sends back; it
never raises anything else, whatever the input (binary, invalid UTF-8, deep nesting, huge
numbers, unknown fields). Which frames a connection may send depends on its phase: before
authentication only the pairing frames, after it only the session frames.

Close codes (WebSocket, application range): `CLOSE_UNAUTHORIZED` (certificate unknown or
revoked, or a hello that does not match it), `CLOSE_REVOKED` (revoked during a session),
`CLOSE_POLICY` (a pre-auth frame that is not a pairing frame, or binary before auth),
`CLOSE_TIMEOUT` (pre-auth time or hello deadline passed), `CLOSE_BUSY` (too many pre-auth
connections).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

PROTOCOL_VERSION = 1
CLOSE_UNAUTHORIZED = 4401
CLOSE_REVOKED = 4403
CLOSE_POLICY = 4400
CLOSE_TIMEOUT = 4408
CLOSE_BUSY = 4429

DEVICE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{2,39}$"
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_TEXT_CHARS = 16384
_MAX_DEPTH = 6
_INT64_MAX = 2**63 - 1

DeviceId = Annotated[StrictStr, Field(pattern=DEVICE_ID_PATTERN)]
Version = Annotated[StrictStr, Field(max_length=64)]


class ProtocolError(Exception):
    """A frame the gateway refuses; ``code`` goes back to the device (never a traceback)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- pairing (no client certificate) ----------------------------------------------------


class PairBegin(_Frame):
    type: Literal["pair.begin"]
    device_id: DeviceId


class PairPoll(_Frame):
    type: Literal["pair.poll"]
    code: Annotated[StrictStr, Field(min_length=4, max_length=16)]
    secret: Annotated[StrictStr, Field(min_length=16, max_length=128)]


class PairCsr(_Frame):
    type: Literal["pair.csr"]
    token: Annotated[StrictStr, Field(min_length=16, max_length=128)]
    csr: Annotated[StrictStr, Field(min_length=64, max_length=3000)]


# --- session (client certificate verified) ----------------------------------------------


class Hello(_Frame):
    type: Literal["device.hello"]
    device_id: DeviceId
    last_seen_seq: Annotated[StrictInt, Field(ge=0, le=_INT64_MAX)]
    fw_version: Version = ""
    model_version: Version = ""
    capabilities: Annotated[list[Annotated[StrictStr, Field(max_length=32)]], Field(max_length=16)] = []
    board: Annotated[StrictStr, Field(max_length=64)] = ""  # OTA offers match it


class DeviceMessage(_Frame):
    type: Literal["message"]
    message_id: Annotated[StrictStr, Field(pattern=MESSAGE_ID_PATTERN)]
    text: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
    ts_ms: Annotated[StrictInt, Field(ge=0, le=253_402_300_799_999)] | None = None


Metric = Annotated[StrictInt | StrictFloat, Field(ge=0, le=1e9, allow_inf_nan=False)]


class OtaMetrics(_Frame):
    """What a device measured after an install (all optional); past `[ota]` limits a reported
    success counts as a failure (`microclaw.gateway.ota.judge`)."""

    boot_failures: Metric | None = None
    confirm_miss_rate: Annotated[StrictInt | StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)] | None = (
        None
    )
    latency_ms: Metric | None = None


class OtaResult(_Frame):
    """A device's report after installing (or failing to install) an OTA release."""

    type: Literal["ota.result"]
    kind: Literal["firmware", "model"]
    version: Annotated[StrictStr, Field(max_length=32)]
    ok: StrictBool
    reason: Annotated[StrictStr, Field(max_length=256)] = ""
    metrics: OtaMetrics | None = None


# --- voice (session): audio in binary frames between listen.start and listen.stop ----------

LISTEN_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
ListenId = Annotated[StrictStr, Field(pattern=LISTEN_ID_PATTERN)]


class ListenStart(_Frame):
    type: Literal["listen.start"]
    listen_id: ListenId
    format: Literal["pcm16"] = "pcm16"
    sample_rate: Annotated[StrictInt, Field(ge=8000, le=48000)] = 16000
    channels: Literal[1] = 1


class ListenStop(_Frame):
    type: Literal["listen.stop"]
    listen_id: ListenId


class ListenCancel(_Frame):
    type: Literal["listen.cancel"]
    listen_id: ListenId


def voice_message_id(listen_id: str) -> str:
    """The ``message_id`` a voice turn's transcript is stored under (one per listen id)."""
    return f"voice:{listen_id}"


PairingFrame = Annotated[PairBegin | PairPoll | PairCsr, Field(discriminator="type")]
_SessionUnion = DeviceMessage | OtaResult | ListenStart | ListenStop | ListenCancel
SessionFrame = Annotated[_SessionUnion, Field(discriminator="type")]
_PAIRING: TypeAdapter[PairBegin | PairPoll | PairCsr] = TypeAdapter(PairingFrame)
_HELLO: TypeAdapter[Hello] = TypeAdapter(Hello)
_SESSION: TypeAdapter[_SessionUnion] = TypeAdapter(SessionFrame)
_ADAPTERS: dict[str, TypeAdapter[Any]] = {"pairing": _PAIRING, "hello": _HELLO, "session": _SESSION}
Phase = Literal["pairing", "hello", "session"]


def _depth(value: Any, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def decode(raw: str | bytes) -> dict[str, Any]:
    """The JSON object in a text frame; `ProtocolError` for binary, bad JSON or other shapes."""
    if isinstance(raw, bytes):
        raise ProtocolError("binary_unsupported", "binary frames are not accepted here")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "the frame is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_frame", "a frame is a JSON object")
    if _depth(value) > _MAX_DEPTH:
        raise ProtocolError("bad_frame", "the frame is nested too deeply")
    if not isinstance(value.get("type"), str):
        raise ProtocolError("bad_frame", "the frame has no string 'type'")
    return value


def parse_frame(raw: str | bytes, phase: Phase) -> Any:
    """One validated frame allowed in ``phase``; `ProtocolError` otherwise."""
    value = decode(raw)
    try:
        return _ADAPTERS[phase].validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != value["type"]) or "frame"
        if first.get("type") == "union_tag_invalid" or (phase != "session" and where == "type"):
            raise ProtocolError("unexpected_type", f"{value['type'][:40]!r} is not allowed here") from None
        if phase == "session" and first.get("type") == "union_tag_invalid":
            raise ProtocolError("unexpected_type", f"{value['type'][:40]!r} is not allowed here") from None
        raise ProtocolError("bad_frame", f"{where}: {first.get('msg', 'invalid')}") from None
    except (RecursionError, ValueError):
        raise ProtocolError("bad_frame", "the frame could not be validated") from None


def frame(frame_type: str, /, **fields: Any) -> str:
    """A gateway -> device frame as JSON text."""
    return json.dumps({"type": frame_type, **fields}, separators=(",", ":"))
