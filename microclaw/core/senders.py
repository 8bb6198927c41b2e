"""Sender allowlist: who may trigger the assistant, and whose messages are dropped (contract §1.3).

The allowlist file (``sender-allowlist.json``) has the NanoClaw shape::

    {"default": {"allow": "*" | [sender, ...], "mode": "trigger" | "drop"},
     "chats": {"<chat jid>": {"allow": ..., "mode": ...}},
     "logDenied": true}

In ``trigger`` mode messages from senders not allowed are stored and serve as context but cannot
trigger; in ``drop`` mode they are discarded at ingestion and never stored. A per-chat entry
replaces the default for that chat. ``"*"`` allows everyone; a list needs an exact match, so
``[]`` denies everyone.

Owns parsing that file into a frozen :class:`SenderAllowlist` and the verdicts over it.
:func:`load_sender_allowlist` is the only I/O here and never caches: the caller re-reads the
file for every check, so edits take effect at once. Does not decide what a trigger looks like
(:mod:`microclaw.core.triggers`) nor store or discard anything itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "AllowEntry",
    "SenderAllowlist",
    "is_sender_allowed",
    "is_trigger_allowed",
    "load_sender_allowlist",
    "should_drop_at_ingest",
    "should_drop_message",
]

logger = logging.getLogger(__name__)

AllowMode = Literal["trigger", "drop"]
_MODES = ("trigger", "drop")


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """One allowlist rule: ``allow`` is ``"*"`` (everyone) or the exact sender ids allowed."""

    allow: Literal["*"] | tuple[str, ...]
    mode: AllowMode

    def __post_init__(self) -> None:
        if self.allow != "*":
            if isinstance(self.allow, str) or not all(isinstance(s, str) for s in self.allow):
                raise ValueError(f'allow must be "*" or a list of strings, got {self.allow!r}')
            object.__setattr__(self, "allow", tuple(self.allow))
        if self.mode not in _MODES:
            raise ValueError(f'mode must be "trigger" or "drop", got {self.mode!r}')

    def allows(self, sender: str) -> bool:
        """True for ``"*"``, else only for an exact match in ``allow``."""
        return self.allow == "*" or sender in self.allow


DEFAULT_ENTRY = AllowEntry(allow="*", mode="trigger")


@dataclass(frozen=True, slots=True)
class SenderAllowlist:
    """The parsed allowlist file; the defaults allow everyone in trigger mode."""

    default: AllowEntry = DEFAULT_ENTRY
    chats: Mapping[str, AllowEntry] = field(default_factory=dict, hash=False)
    log_denied: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "chats", MappingProxyType(dict(self.chats)))

    def entry_for(self, chat_jid: str) -> AllowEntry:
        """The chat's own entry when it has one, else the default."""
        return self.chats.get(chat_jid, self.default)


def _parse_entry(raw: Any) -> AllowEntry | None:
    """An AllowEntry from a JSON value, or None when its shape is invalid."""
    if not isinstance(raw, dict):
        return None
    allow, mode = raw.get("allow"), raw.get("mode")
    if mode not in _MODES:
        return None
    if allow == "*":
        return AllowEntry(allow="*", mode=mode)
    if isinstance(allow, list) and all(isinstance(s, str) for s in allow):
        return AllowEntry(allow=tuple(allow), mode=mode)
    return None


def load_sender_allowlist(path: Path) -> SenderAllowlist:
    """Read and validate the allowlist file at ``path``; never raises for a bad file.

    The defaults (allow ``"*"``, mode ``trigger``, ``logDenied`` true) are returned when the file
    is missing, unreadable, not JSON, not an object, or its ``default`` entry is invalid. Invalid
    per-chat entries are skipped (with a warning) and the others kept. ``logDenied`` is false only
    when it is literally ``false``. Nothing is cached.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return SenderAllowlist()
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("sender allowlist %s unreadable, using defaults: %s", path, exc)
        return SenderAllowlist()
    try:
        data = json.loads(text)
    except ValueError as exc:
        logger.warning("sender allowlist %s is not valid JSON, using defaults: %s", path, exc)
        return SenderAllowlist()
    if not isinstance(data, dict):
        logger.warning("sender allowlist %s is not a JSON object, using defaults", path)
        return SenderAllowlist()
    default = _parse_entry(data.get("default"))
    if default is None:
        logger.warning("sender allowlist %s has an invalid 'default' entry, using defaults", path)
        return SenderAllowlist()
    chats: dict[str, AllowEntry] = {}
    raw_chats = data.get("chats")
    if isinstance(raw_chats, dict):
        for jid, raw in raw_chats.items():
            entry = _parse_entry(raw)
            if entry is None:
                logger.warning("sender allowlist %s: skipping invalid entry for chat %s", path, jid)
                continue
            chats[jid] = entry
    return SenderAllowlist(default=default, chats=chats, log_denied=data.get("logDenied") is not False)


def is_sender_allowed(chat_jid: str, sender: str, cfg: SenderAllowlist) -> bool:
    """True when the chat's effective entry allows ``sender`` (``"*"`` or an exact match)."""
    return cfg.entry_for(chat_jid).allows(sender)


def is_trigger_allowed(chat_jid: str, sender: str, cfg: SenderAllowlist) -> bool:
    """Whether ``sender`` may trigger in this chat: same verdict as :func:`is_sender_allowed`.

    A denial is logged at DEBUG when ``cfg.log_denied`` is set. ``is_from_me`` messages bypass
    this check; that is the caller's rule (see ``triggers.is_trigger_message``).
    """
    allowed = is_sender_allowed(chat_jid, sender, cfg)
    if not allowed and cfg.log_denied:
        logger.debug("trigger from %s denied by sender allowlist", sender, extra={"chat_id": chat_jid})
    return allowed


def should_drop_message(chat_jid: str, cfg: SenderAllowlist) -> bool:
    """True when the chat's effective mode is ``drop``."""
    return cfg.entry_for(chat_jid).mode == "drop"


def should_drop_at_ingest(
    chat_jid: str,
    sender: str,
    *,
    is_from_me: bool,
    is_bot_message: bool,
    registered: bool,
    cfg: SenderAllowlist,
) -> bool:
    """True when an inbound message must be discarded and never stored (drop mode).

    All must hold: not from the user's own account, not a bot message, the chat is registered,
    the chat's mode is ``drop``, and the sender is not allowed.
    """
    if is_from_me or is_bot_message or not registered:
        return False
    return should_drop_message(chat_jid, cfg) and not is_sender_allowed(chat_jid, sender, cfg)
