"""Trigger policy: which messages wake the assistant in a group (NanoClaw parity, contract §1.1-1.2).

Owns the trigger regex (``^<literal trigger>\\b``, case-insensitive), the choice between a
group's own trigger and the default one, the "does this group need a trigger at all" rule and
the per-message trigger test that combines the regex with the sender allowlist verdict.

Does not decide *who* is allowed to trigger (that is :mod:`microclaw.core.senders`), does not
read settings (the default trigger is passed in) and does not touch the store.
"""

from __future__ import annotations

import re

__all__ = [
    "build_trigger_pattern",
    "group_trigger_pattern",
    "is_trigger_message",
    "needs_trigger",
]


def build_trigger_pattern(trigger: str) -> re.Pattern[str]:
    """Compile ``^<escaped trigger>\\b`` (case-insensitive) for a trigger such as ``@Andy``.

    The trigger is trimmed and escaped, so ``@C.L.A.U.D.E`` matches only itself. The match is
    anchored at the start and needs a word boundary after the trigger: ``@Andy's thing``
    matches, ``@Andyextra`` and ``hello @Andy`` do not. Use ``pattern.search(text)``.

    Python's ``\\b`` is Unicode-aware, so a non-ASCII letter right after the trigger
    (``@Andyé``) counts as part of the word, exactly like ``@Andyx``.
    """
    return re.compile("^" + re.escape(trigger.strip()) + r"\b", re.IGNORECASE)


def group_trigger_pattern(group_trigger: str | None, default_trigger: str) -> re.Pattern[str]:
    """Pattern for a group: its own trigger when non-empty after trim, else ``default_trigger``.

    A group whose trigger is ``@Claw`` is not triggered by the default ``@Andy``.
    """
    if group_trigger is not None and group_trigger.strip():
        return build_trigger_pattern(group_trigger)
    return build_trigger_pattern(default_trigger)


def needs_trigger(is_main: bool, requires_trigger: bool | None) -> bool:
    """True when a message batch for this group must contain a trigger to be processed.

    The main group never needs one. Otherwise a trigger is required unless ``requires_trigger``
    is explicitly false: ``None`` (unset or a NULL column) counts as required. A database
    ``0``/``1`` is accepted too and read as a boolean.
    """
    if is_main:
        return False
    return requires_trigger is None or bool(requires_trigger)


def is_trigger_message(
    content: str | None,
    pattern: re.Pattern[str],
    *,
    is_from_me: bool,
    trigger_allowed: bool,
) -> bool:
    """True when one message counts as a trigger.

    The pattern is tested on the trimmed content, and the message must come from the user's own
    account (``is_from_me``) or from a sender the allowlist lets trigger (``trigger_allowed``,
    see :func:`microclaw.core.senders.is_trigger_allowed`). Missing content never triggers.
    """
    if not content:
        return False
    if pattern.search(content.strip()) is None:
        return False
    return is_from_me or trigger_allowed
