"""IANA timezone names: validation and the fall-back to UTC (contract §0.1 ``TIMEZONE``).

Owns the one rule used wherever a configured or stored timezone name is turned into something
usable: a name is valid when :mod:`zoneinfo` can load it, and anything else becomes ``"UTC"``.

Does not pick the configured timezone (``config.py`` tries its candidates in order and keeps
the first one :func:`is_valid_timezone` accepts) and does not convert times (callers use
``ZoneInfo``).
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["DEFAULT_TIMEZONE", "is_valid_timezone", "resolve_timezone"]

DEFAULT_TIMEZONE = "UTC"


def is_valid_timezone(name: str) -> bool:
    """True when ``name`` is an IANA timezone key that :mod:`zoneinfo` can load.

    Keys are exact (``utc`` and ``America/New_York `` with a trailing space are invalid);
    empty strings, absolute paths and ``..`` keys are invalid.
    """
    if not isinstance(name, str) or not name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def resolve_timezone(name: str | None) -> str:
    """``name`` when it is a valid IANA timezone, else ``"UTC"`` (also for ``None``)."""
    if name is not None and is_valid_timezone(name):
        return name
    return DEFAULT_TIMEZONE
