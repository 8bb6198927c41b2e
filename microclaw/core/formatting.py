"""Prompt and reply text: the exact strings the agent sees and the user receives (contract §2).

Owns the inbound prompt layout (``<context timezone=… />`` + ``<messages>`` block with 4-character
XML escaping and quoted replies), the local-time rendering used in it, the scheduled-task prompt
wrapper, and the outbound cleaning that removes ``<internal>…</internal>`` blocks.

Does not choose which messages go into a prompt (cursors, the cap of 10 and bot filtering live in
the store and the router), does not split replies to a platform's size limit (connectors do) and
does not decide whether a path strips tags (IPC ``send_message`` text is sent raw by its caller).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from microclaw.core.timezones import resolve_timezone

__all__ = [
    "SCHEDULED_TASK_PREAMBLE",
    "MessageLike",
    "escape_xml",
    "format_local_time",
    "format_messages",
    "format_outbound",
    "strip_internal_tags",
    "wrap_scheduled_prompt",
]

SCHEDULED_TASK_PREAMBLE = (
    "[SCHEDULED TASK - The following message was sent automatically and is not coming "
    "directly from the user or group.]"
)
"""Prepended (then a blank line) to a scheduled task's prompt when no pre-check script woke it."""

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_INTERNAL_BLOCK = re.compile(r"<internal>[\s\S]*?</internal>")
_INVALID_DATE = "Invalid Date"  # what the reference renders for an unparseable timestamp


class MessageLike(Protocol):
    """What :func:`format_messages` reads from a stored message.

    Optional attributes, read with ``getattr(..., None)``: ``reply_to_message_id``,
    ``reply_to_message_content`` and ``reply_to_sender_name``.
    """

    @property
    def sender_name(self) -> str | None: ...

    @property
    def content(self) -> str | None: ...

    @property
    def timestamp(self) -> str | datetime | None: ...


def escape_xml(text: str | None) -> str:
    """Escape ``&``, ``<``, ``>`` and ``"`` (in that order); ``None`` or ``""`` gives ``""``.

    Single quotes are left alone, as in the reference.
    """
    if not text:
        return ""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _to_datetime(ts: str | datetime | None) -> datetime | None:
    """Parse an ISO string (``Z`` allowed); naive values are UTC. None when missing or unparseable."""
    if ts is None:
        return None
    if isinstance(ts, datetime):
        value = ts
    else:
        try:
            value = datetime.fromisoformat(ts.strip())
        except (ValueError, AttributeError):
            return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def format_local_time(ts: str | datetime | None, timezone: str) -> str:
    """Render a timestamp like ``Jan 1, 2024, 12:00 AM`` in ``timezone``.

    Mirrors ``toLocaleString('en-US', {year:'numeric', month:'short', day:'numeric',
    hour:'numeric', minute:'2-digit', hour12:true})`` with a plain space before AM/PM, whatever
    the process locale. An invalid timezone falls back to UTC; a naive datetime or an ISO string
    without an offset is taken as UTC; a missing or unparseable one renders as ``Invalid Date``.
    """
    value = _to_datetime(ts)
    if value is None:
        return _INVALID_DATE
    local = value.astimezone(ZoneInfo(resolve_timezone(timezone)))
    hour12 = local.hour % 12 or 12
    meridiem = "AM" if local.hour < 12 else "PM"
    return f"{_MONTHS[local.month - 1]} {local.day}, {local.year}, {hour12}:{local.minute:02d} {meridiem}"


def _format_message(message: MessageLike, timezone: str) -> str:
    reply_id = getattr(message, "reply_to_message_id", None)
    reply_content = getattr(message, "reply_to_message_content", None)
    reply_sender = getattr(message, "reply_to_sender_name", None)
    reply_attr = f' reply_to="{escape_xml(reply_id)}"' if reply_id else ""
    quote = (
        f'\n  <quoted_message from="{escape_xml(reply_sender)}">{escape_xml(reply_content)}</quoted_message>'
        if reply_content and reply_sender
        else ""
    )
    time = escape_xml(format_local_time(message.timestamp, timezone))
    return (
        f'<message sender="{escape_xml(message.sender_name)}" time="{time}"{reply_attr}>'
        f"{quote}{escape_xml(message.content)}</message>"
    )


def format_messages(messages: Sequence[MessageLike], timezone: str) -> str:
    """Build the agent prompt for a batch of messages, in the order given.

    Layout: ``<context timezone="TZ" />``, newline, ``<messages>``, newline, one
    ``<message sender=… time=…[ reply_to=…]>[QUOTE]CONTENT</message>`` per line, newline,
    ``</messages>``. ``QUOTE`` is ``\\n  <quoted_message from="…">…</quoted_message>`` and appears
    only when both the replied-to content and sender are set; ``reply_to`` appears whenever the
    replied-to id is set. Every attribute value and all content is escaped. The header carries
    ``timezone`` as given (escaped); times fall back to UTC when it is invalid.
    """
    lines = "\n".join(_format_message(message, timezone) for message in messages)
    return f'<context timezone="{escape_xml(timezone)}" />\n<messages>\n{lines}\n</messages>'


def strip_internal_tags(text: str) -> str:
    """Remove every ``<internal>…</internal>`` block (non-greedy, multi-line), then trim.

    Whitespace around a removed block is kept: ``hello <internal>x</internal> world`` becomes
    ``hello  world`` (two spaces). An unclosed ``<internal>`` is left as is.
    """
    return _INTERNAL_BLOCK.sub("", text).strip()


def format_outbound(text: str) -> str:
    """Clean an agent reply or task result for sending; ``""`` means send nothing."""
    return strip_internal_tags(text)


def wrap_scheduled_prompt(prompt: str, script_output: Mapping[str, Any] | None = None) -> str:
    """The prompt a scheduled task's agent run receives (contract §2.2).

    Without ``script_output``: :data:`SCHEDULED_TASK_PREAMBLE`, a blank line, then ``prompt``.
    With the ``data`` of a pre-check script that woke the agent: ``[SCHEDULED TASK]``, a blank
    line, ``Script output:`` and the data as 2-space indented JSON, a blank line, then
    ``Instructions:`` and ``prompt``.
    """
    if script_output is None:
        return f"{SCHEDULED_TASK_PREAMBLE}\n\n{prompt}"
    data = json.dumps(script_output, indent=2, ensure_ascii=False)
    return f"[SCHEDULED TASK]\n\nScript output:\n{data}\n\nInstructions:\n{prompt}"
