"""Schedule arithmetic for scheduled tasks: when a task first runs and when it runs next (contract §4).

Three schedule types, as in NanoClaw:

* ``cron``: a 5-field cron expression (or 6 fields with seconds first, as cron-parser accepts),
  evaluated in the configured IANA timezone, so ``0 9 * * *`` is 09:00 local on both sides of
  a DST change. In the repeated hour of a fall-back transition, an expression with a restricted
  hour field fires once (the first pass); one whose hour field is ``*`` fires in both passes
  (cron-parser's rule).
* ``interval``: milliseconds as a decimal string (``"3600000"``). The first run is now + ms;
  later runs stay on the grid of the scheduled time, skipping missed slots, never at or before
  now.
* ``once``: an ISO 8601 timestamp. Without an offset it is local time in the configured timezone
  (MicroClaw's stand-in for NanoClaw's process-local time); with one it is that instant. There
  is no next run.

Owns these rules, the validation that rejects a bad schedule with a ValueError naming the value
(an instant past what a datetime can hold, year 9999, is such a ValueError too, never an
OverflowError), the shortest gap between two runs of a schedule (`min_gap`, which the scheduling
limits compare with ``scheduler.min_interval_s``), and the ``last_result`` summary stored after a
run. All datetimes in and out are aware; naive
inputs are read as UTC (SQLite hands back naive UTC), results are in UTC.

Does not read the clock (``now`` is passed in), touch the store, or claim due runs (the beat tick
does that, advancing ``next_run`` with :func:`next_run` in the same transaction).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from microclaw.core.timezones import is_valid_timezone

__all__ = [
    "INVALID_INTERVAL_RETRY",
    "LAST_RESULT_MAX_CHARS",
    "SCHEDULE_TYPES",
    "ScheduleLimits",
    "check_min_interval",
    "first_run",
    "min_gap",
    "next_run",
    "truncate_result",
    "validate_schedule",
]

SCHEDULE_TYPES = ("cron", "interval", "once")
LAST_RESULT_MAX_CHARS = 200
INVALID_INTERVAL_RETRY = timedelta(seconds=60)
"""next_run of an interval task whose stored value is invalid: now + this (reference guard)."""

_DIGITS = re.compile(r"[0-9]+")
# Bound on the occurrences skipped in one repeated fall-back span (per-second cron over 1-2 h).
_MAX_CRON_SKIPS = 10_000


@dataclass(frozen=True)
class ScheduleLimits:
    """Limits on scheduled tasks (``[scheduler]`` and ``agent.daily_token_budget``).

    ``min_interval``: no schedule may run more often (zero: no limit). ``max_active_tasks``:
    active tasks per group (0: no limit). ``daily_token_budget``: a group that used this many
    tokens today (UTC) gets no scheduled runs until the day ends (0: no limit).
    """

    min_interval: timedelta = timedelta(seconds=60)
    max_active_tasks: int = 50
    daily_token_budget: int = 0


def check_min_interval(schedule_type: str, schedule_value: str, min_interval: timedelta) -> None:
    """Raise ValueError, naming both, when the schedule can run twice within ``min_interval``."""
    gap = min_gap(schedule_type, schedule_value)
    if gap is not None and gap < min_interval:
        raise ValueError(
            f"{schedule_type} {schedule_value!r} runs every {_seconds(gap)}; the shortest allowed gap "
            f"between two runs is {_seconds(min_interval)} (scheduler.min_interval_s)"
        )


def _seconds(gap: timedelta) -> str:
    return f"{gap.total_seconds():g} s"


def _out_of_range(what: str, exc: Exception) -> ValueError:
    return ValueError(f"{what} is out of range: it falls past the year 9999 ({exc})")


def _unknown_type(schedule_type: str) -> ValueError:
    return ValueError(
        f"unknown schedule_type {schedule_type!r} (expected one of {', '.join(SCHEDULE_TYPES)})"
    )


def _zone(timezone: str) -> tzinfo:
    if not is_valid_timezone(timezone):
        raise ValueError(f"unknown timezone {timezone!r} (expected an IANA name such as 'Europe/Paris')")
    return ZoneInfo(timezone)


def _aware(value: datetime) -> datetime:
    """Naive datetimes are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _parse_interval(value: str) -> timedelta:
    text = value.strip() if isinstance(value, str) else ""
    if _DIGITS.fullmatch(text) is None or int(text) <= 0:
        raise ValueError(
            f"invalid interval {value!r}: expected a positive whole number of milliseconds, e.g. '3600000'"
        )
    try:
        return timedelta(milliseconds=int(text))
    except OverflowError as exc:
        raise ValueError(f"invalid interval {value!r}: too large") from exc


def _parse_cron(value: str) -> str:
    expr = value.strip() if isinstance(value, str) else ""
    fields = expr.split()
    if not expr.startswith("@") and len(fields) not in (5, 6):
        raise ValueError(
            f"invalid cron expression {value!r}: expected 5 fields (minute hour day month weekday) "
            "or 6 with seconds first"
        )
    try:
        _croniter(expr, datetime(2000, 1, 1, tzinfo=UTC))
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"invalid cron expression {value!r}: {exc}") from exc
    return expr


def _croniter(expr: str, start: datetime) -> croniter:
    # cron-parser reads a sixth field as seconds *first*; croniter's default puts it last.
    return croniter(expr, start, second_at_beginning=len(expr.split()) == 6)


def _parse_once(value: str, zone: tzinfo) -> datetime:
    try:
        when = datetime.fromisoformat(value.strip())
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValueError(
            f"invalid once timestamp {value!r}: expected ISO 8601 such as '2026-02-01T15:30:00'"
        ) from exc
    if when.tzinfo is None:
        # fold=0: an ambiguous local time is its first occurrence, a skipped one moves forward
        # by the gap (both as JavaScript's Date does).
        when = when.replace(tzinfo=zone)
    try:
        return when.astimezone(UTC)
    except OverflowError as exc:
        raise _out_of_range(f"once timestamp {value!r}", exc) from exc


def _is_second_pass(local: datetime) -> bool:
    """True when ``local`` is the later of two instants sharing its wall-clock time (fall-back)."""
    first = local.replace(fold=0).astimezone(UTC)
    second = local.replace(fold=1).astimezone(UTC)
    # In a spring-forward gap fold=1 is the *earlier* instant, so ``second > first`` excludes it.
    return second > first and local.astimezone(UTC) == second


def _next_cron(expr: str, now: datetime, zone: tzinfo) -> datetime:
    try:
        return _next_cron_unguarded(expr, now, zone)
    except OverflowError as exc:
        raise _out_of_range(f"the next run of cron expression {expr!r}", exc) from exc


def _next_cron_unguarded(expr: str, now: datetime, zone: tzinfo) -> datetime:
    it = _croniter(expr, _aware(now).astimezone(zone))
    hours_restricted = it.expanded[1] != ["*"]
    candidate: datetime = it.get_next(datetime)
    for _ in range(_MAX_CRON_SKIPS):
        if not (hours_restricted and _is_second_pass(candidate)):
            break
        candidate = it.get_next(datetime)
    return candidate.astimezone(UTC)


def validate_schedule(schedule_type: str, schedule_value: str, timezone: str) -> None:
    """Raise ValueError, naming the bad part, unless the schedule is usable.

    ``schedule_type`` must be ``cron``, ``interval`` or ``once`` (exact, lower case) and
    ``timezone`` a valid IANA name. A ``once`` time in the past is valid (it runs at the next tick).
    """
    first_run(schedule_type, schedule_value, datetime(2000, 1, 1, tzinfo=UTC), timezone)


def first_run(schedule_type: str, schedule_value: str, now: datetime, timezone: str) -> datetime:
    """When a new task first runs (UTC).

    cron: the next occurrence strictly after ``now`` in ``timezone``; interval: ``now`` + ms;
    once: the given instant, even if it is in the past. Raises ValueError for an unknown type, an
    invalid value or an invalid timezone (MicroClaw rejects what NanoClaw stored with a NULL
    ``next_run``).
    """
    zone = _zone(timezone)
    now = _aware(now)
    if schedule_type == "cron":
        return _next_cron(_parse_cron(schedule_value), now, zone)
    if schedule_type == "interval":
        step = _parse_interval(schedule_value)
        try:
            return (now + step).astimezone(UTC)
        except OverflowError as exc:
            raise _out_of_range(f"interval {schedule_value!r} from {now.isoformat()}", exc) from exc
    if schedule_type == "once":
        return _parse_once(schedule_value, zone)
    raise _unknown_type(schedule_type)


def next_run(
    schedule_type: str,
    schedule_value: str,
    scheduled_at: datetime | None,
    now: datetime,
    timezone: str,
) -> datetime | None:
    """When a task runs after the run that was due at ``scheduled_at`` (UTC), or None.

    * once: None (the task becomes ``completed``).
    * cron: the next occurrence strictly after ``now`` in ``timezone``.
    * interval: ``scheduled_at + k * ms`` for the smallest ``k >= 1`` that is after ``now``, so
      missed slots are skipped and the original grid is kept (``now + ms`` when ``scheduled_at``
      is None). An invalid stored interval gives ``now + 60 s``, the reference's guard.

    Raises ValueError for an unknown type, an invalid cron expression, an invalid timezone or
    a next run past the year 9999 (not for ``once``, which never looks at its value again).
    """
    if schedule_type == "once":
        return None
    if schedule_type not in SCHEDULE_TYPES:
        raise _unknown_type(schedule_type)
    zone = _zone(timezone)
    now = _aware(now)
    if schedule_type == "cron":
        return _next_cron(_parse_cron(schedule_value), now, zone)
    try:  # interval
        step = _parse_interval(schedule_value)
    except ValueError:
        return (now + INVALID_INTERVAL_RETRY).astimezone(UTC)
    anchor = now if scheduled_at is None else _aware(scheduled_at)
    try:
        slots = max(1, (now - anchor) // step + 1)
        return (anchor + slots * step).astimezone(UTC)
    except OverflowError as exc:
        what = f"the next run of interval {schedule_value!r} after {anchor.isoformat()}"
        raise _out_of_range(what, exc) from exc


def min_gap(schedule_type: str, schedule_value: str) -> timedelta | None:
    """The shortest time between two consecutive runs of a valid schedule; None for ``once``.

    interval: the interval. cron: the smallest gap between two of the times of day its second,
    minute and hour fields allow, or across midnight between the last and the first of them
    (consecutive matching days assumed, so the answer is never more than the real gap). The
    day, month and weekday fields only make runs rarer. Raises ValueError for an invalid
    schedule or an unknown type.
    """
    if schedule_type == "once":
        return None
    if schedule_type == "interval":
        return _parse_interval(schedule_value)
    if schedule_type != "cron":
        raise _unknown_type(schedule_type)
    expr = _parse_cron(schedule_value)
    fields = _croniter(expr, datetime(2000, 1, 1, tzinfo=UTC)).expanded
    minutes, hours = _values(fields[0], 60), _values(fields[1], 24)
    seconds = _values(fields[5], 60) if len(fields) > 5 else [0]
    times = sorted({h * 3600 + m * 60 + s for h in hours for m in minutes for s in seconds})
    gaps = [b - a for a, b in itertools.pairwise(times)]
    gaps.append(86_400 - (times[-1] - times[0]))
    return timedelta(seconds=min(gaps))


def _values(field: list[object], size: int) -> list[int]:
    """A croniter-expanded field as numbers (``*`` is every value)."""
    if field == ["*"]:
        return list(range(size))
    return sorted({int(str(v)) for v in field if str(v).isdigit()}) or [0]


def truncate_result(result: str | None, error: str | None) -> str:
    """The ``last_result`` stored after a run.

    ``Error: <error>`` when the run failed, else the first 200 characters of the result, else
    ``Completed`` (no result, e.g. a pre-check script that did not wake the agent). Empty strings
    count as absent, as in the reference.
    """
    if error:
        return f"Error: {error}"
    if result:
        return result[:LAST_RESULT_MAX_CHARS]
    return "Completed"
