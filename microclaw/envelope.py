"""Envelope v1: the one shape in which every inbound message enters MicroClaw.

``{v, seq, ts_ms, source, device_id, session_id, message_id, payload}`` where ``payload`` is a
chat message (``chat_id``, ``sender``, ``sender_name``, ``text``, flags and reply fields).
`parse_envelope` accepts bytes, text or a mapping and either returns a frozen, fully validated
`Envelope` or raises `EnvelopeError` naming the field: required fields, types, unknown fields,
valid UTF-8 (also no lone surrogates), the text size limit and the version are all checked.
Hostile input is an `EnvelopeError` too, never another exception: nesting deeper than an
envelope has (`MAX_DEPTH`), integers past Python's digit limit or SQLite's 64-bit range, and
timestamps beyond year 9999.

This module does not store anything or know about connectors beyond the ``source`` name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from microclaw.errors import EnvelopeError

ENVELOPE_VERSION = 1
DEFAULT_MAX_TEXT_BYTES = 64 * 1024
# Headroom for metadata around the text when the whole envelope arrives as bytes.
_ENVELOPE_OVERHEAD_BYTES = 16 * 1024
_ID_MAX = 512
# An envelope is two levels deep (envelope -> payload -> field); a little headroom, no recursion.
MAX_DEPTH = 8
_INT64_MAX = 2**63 - 1
# 9999-12-31T23:59:59.999Z: the last moment `timestamp_iso` can print.
_TS_MS_MAX = 253_402_300_799_999


class ChatPayload(BaseModel):
    """One chat message as a connector saw it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chat_id: StrictStr = Field(min_length=1, max_length=_ID_MAX)
    sender: StrictStr = Field(default="", max_length=_ID_MAX)
    sender_name: StrictStr = Field(default="", max_length=_ID_MAX)
    text: StrictStr
    is_from_me: StrictBool = False
    is_bot_message: StrictBool = False
    reply_to_message_id: StrictStr | None = Field(default=None, max_length=_ID_MAX)
    reply_to_message_content: StrictStr | None = None
    reply_to_sender_name: StrictStr | None = Field(default=None, max_length=_ID_MAX)
    chat_name: StrictStr | None = Field(default=None, max_length=_ID_MAX)
    is_group: StrictBool | None = None


class Envelope(BaseModel):
    """A validated inbound message. ``message_id`` is globally unique (``tg:<chat>:<msg>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: StrictInt
    seq: StrictInt = Field(ge=0, le=_INT64_MAX)
    ts_ms: StrictInt = Field(ge=0, le=_TS_MS_MAX)
    source: StrictStr = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
    device_id: StrictStr | None = Field(default=None, max_length=_ID_MAX)
    session_id: StrictStr | None = Field(default=None, max_length=_ID_MAX)
    message_id: StrictStr = Field(min_length=1, max_length=_ID_MAX)
    payload: ChatPayload

    @property
    def chat_id(self) -> str:
        return self.payload.chat_id

    @property
    def timestamp_iso(self) -> str:
        """``ts_ms`` as NanoClaw's stored form (``YYYY-MM-DDTHH:MM:SS.sssZ``)."""
        moment = datetime.fromtimestamp(self.ts_ms / 1000, tz=UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.ts_ms % 1000:03d}Z"

    def to_json(self) -> str:
        return self.model_dump_json()


def _reject(message: str, *, field: str | None = None, raw: Any = None) -> EnvelopeError:
    message_id = raw.get("message_id") if isinstance(raw, Mapping) else None
    return EnvelopeError(message, field=field, message_id=message_id if isinstance(message_id, str) else None)


def _show(value: Any) -> str:
    """A short, safe rendering of a value from input (``repr`` of a huge int raises)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return "a very large integer"
    if isinstance(value, str | int | float | bool) or value is None:
        return repr(value)[:40]
    return f"a {type(value).__name__}"


def _check_utf8(data: Any) -> None:
    """Reject strings that cannot be encoded as UTF-8 (lone surrogates from JSON escapes) and
    nesting deeper than `MAX_DEPTH`. Iterative: hostile depth cannot exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise EnvelopeError(f"{path}: not valid UTF-8", field=path or None) from None
            continue
        if isinstance(value, Mapping):
            items = [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
        elif isinstance(value, list | tuple):
            items = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
        else:
            continue
        if depth >= MAX_DEPTH:
            raise EnvelopeError(f"{path or 'envelope'}: nested too deeply", field=path or None)
        stack.extend((item, where[:200], depth + 1) for where, item in items)


def parse_envelope(
    raw: bytes | str | Mapping[str, Any], *, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
) -> Envelope:
    """Validate ``raw`` into an `Envelope`, or raise `EnvelopeError` saying what is wrong."""
    data: Any = raw
    if isinstance(raw, bytes | bytearray):
        if len(raw) > max_text_bytes + _ENVELOPE_OVERHEAD_BYTES:
            raise EnvelopeError(f"envelope too large: {len(raw)} bytes", field="payload.text")
        try:
            data = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError(f"envelope is not valid UTF-8 (byte {exc.start})") from None
    if isinstance(data, str):
        if len(data) > max_text_bytes + _ENVELOPE_OVERHEAD_BYTES:
            raise EnvelopeError(f"envelope too large: {len(data)} characters", field="payload.text")
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise EnvelopeError(f"envelope is not JSON: {exc.msg} at position {exc.pos}") from None
        except RecursionError:
            raise EnvelopeError("envelope is nested too deeply") from None
        except ValueError as exc:  # an integer past Python's digit limit
            raise EnvelopeError(f"envelope is not acceptable JSON: {str(exc)[:200]}") from None
    if not isinstance(data, Mapping):
        raise EnvelopeError(f"envelope must be a JSON object, got {type(data).__name__}")

    if "v" not in data:
        raise _reject("missing required field 'v'", field="v", raw=data)
    if data["v"] != ENVELOPE_VERSION or isinstance(data["v"], bool):
        raise _reject(
            f"unsupported envelope version {_show(data['v'])} (this host speaks v{ENVELOPE_VERSION})",
            field="v",
            raw=data,
        )
    _check_utf8(data)

    payload = data.get("payload")
    if isinstance(payload, Mapping) and isinstance(payload.get("text"), str):
        size = len(payload["text"].encode("utf-8"))
        if size > max_text_bytes:
            raise _reject(
                f"payload.text is {size} bytes; the limit is {max_text_bytes}", field="payload.text", raw=data
            )
    try:
        return Envelope.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        problem = "missing required field" if first["type"] == "missing" else first["msg"]
        raise _reject(f"{where}: {problem}" if where else problem, field=where, raw=data) from None


def make_envelope(
    *,
    source: str,
    message_id: str,
    chat_id: str,
    text: str,
    sender: str = "",
    sender_name: str = "",
    ts_ms: int | None = None,
    seq: int = 0,
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
    **payload: Any,
) -> Envelope:
    """Build and validate an envelope from a connector's fields (same checks as `parse_envelope`)."""
    stamp = ts_ms if ts_ms is not None else int(datetime.now(tz=UTC).timestamp() * 1000)
    return parse_envelope(
        {
            "v": ENVELOPE_VERSION,
            "seq": seq,
            "ts_ms": stamp,
            "source": source,
            "message_id": message_id,
            "payload": {
                "chat_id": chat_id,
                "text": text,
                "sender": sender,
                "sender_name": sender_name,
                **payload,
            },
        },
        max_text_bytes=max_text_bytes,
    )
