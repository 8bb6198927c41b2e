"""microclaw.scheduler.schedule: far-future arithmetic is a ValueError, and the shortest gap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from microclaw.scheduler.schedule import check_min_interval, first_run, min_gap, next_run

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "value", "zone"),
    [
        ("once", "9999-12-31T23:00:00", "America/New_York"),  # valid local time, UTC is year 10000
        ("interval", "315537897600000", "UTC"),  # ~10,000 years from now
        ("interval", "86399999999999999", "UTC"),  # longer than a timedelta holds
    ],
)
def test_a_first_run_past_year_9999_is_a_clear_value_error(kind: str, value: str, zone: str) -> None:
    with pytest.raises(ValueError, match=r"out of range|too large"):
        first_run(kind, value, NOW, zone)


def test_a_next_run_past_year_9999_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="past the year 9999"):
        next_run("interval", "315537897600000", NOW - timedelta(minutes=1), NOW, "UTC")


@pytest.mark.parametrize(
    ("kind", "value", "gap"),
    [
        ("interval", "1000", timedelta(seconds=1)),
        ("cron", "0 9 * * *", timedelta(days=1)),
        ("cron", "*/5 * * * *", timedelta(minutes=5)),
        ("cron", "* * * * * *", timedelta(seconds=1)),
        ("cron", "*/10 * * * * *", timedelta(seconds=10)),
        ("cron", "0,59 0,23 * * *", timedelta(minutes=1)),  # 23:59 then 00:00 the next day
        ("cron", "@hourly", timedelta(hours=1)),
        ("once", "2026-03-02T10:00:00", None),
    ],
)
def test_min_gap(kind: str, value: str, gap: timedelta | None) -> None:
    assert min_gap(kind, value) == gap


def test_check_min_interval_names_the_schedule_and_the_setting() -> None:
    check_min_interval("cron", "* * * * *", timedelta(seconds=60))
    with pytest.raises(ValueError, match=r"every 1 s.*60 s \(scheduler.min_interval_s\)"):
        check_min_interval("interval", "1000", timedelta(seconds=60))
