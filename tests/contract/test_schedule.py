"""Contract §4.1-4.4 and checklist 11.9: first and next runs for cron, interval and once, last_result."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from microclaw.agent.loop import AgentRequest, AgentResult
from microclaw.pipeline.router import process_group
from microclaw.scheduler.schedule import first_run, next_run, truncate_result, validate_schedule
from microclaw.scheduler.tick import claim_due_tasks, iso
from microclaw.store import audit, tasks
from microclaw.store.db import read_tx, write_tx
from tests.helpers import outbox_rows, register, router_deps


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def assert_utc(value: datetime | None) -> datetime:
    assert value is not None
    assert value.utcoffset() == timedelta(0)
    return value


# -- cron -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "tz", "now", "expected"),
    [
        ("0 9 * * *", "UTC", utc(2026, 1, 1, 8, 0), utc(2026, 1, 1, 9, 0)),
        ("0 9 * * *", "UTC", utc(2026, 1, 1, 10, 0), utc(2026, 1, 2, 9, 0)),
        ("0 9 * * *", "America/New_York", utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 14, 0)),  # EST
        ("0 9 * * *", "America/New_York", utc(2026, 7, 1, 0, 0), utc(2026, 7, 1, 13, 0)),  # EDT
        ("0 9 * * *", "Asia/Kolkata", utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 3, 30)),
        ("*/5 * * * *", "UTC", utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 5)),
        ("0 9 * * 1-5", "UTC", utc(2026, 1, 3, 12, 0), utc(2026, 1, 5, 9, 0)),  # Sat -> Mon
        ("30 0 9 * * *", "UTC", utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 9, 0, 30)),  # 6 fields: seconds first
        ("@daily", "UTC", utc(2026, 1, 1, 0, 0), utc(2026, 1, 2, 0, 0)),
    ],
)
def test_cron_first_run(expr: str, tz: str, now: datetime, expected: datetime) -> None:
    assert assert_utc(first_run("cron", expr, now, tz)) == expected


def test_cron_next_is_strictly_after_now() -> None:
    assert first_run("cron", "0 9 * * *", utc(2026, 1, 1, 9, 0), "UTC") == utc(2026, 1, 2, 9, 0)
    assert first_run("cron", "0 9 * * *", utc(2026, 1, 1, 9, 0, 30), "UTC") == utc(2026, 1, 2, 9, 0)
    assert first_run("cron", "* * * * *", utc(2026, 1, 1, 12, 0, 30), "UTC") == utc(2026, 1, 1, 12, 1)


def test_cron_next_run_is_computed_from_now_not_the_scheduled_time() -> None:
    # The 09:00 run happened late, at 09:00 the next day: the next run is the day after that.
    got = next_run("cron", "0 9 * * *", utc(2026, 1, 1, 9, 0), utc(2026, 1, 2, 9, 0, 5), "UTC")
    assert got == utc(2026, 1, 3, 9, 0)


def test_cron_keeps_local_wall_time_across_spring_forward() -> None:
    # America/New_York goes EST -> EDT on 2026-03-08: 09:00 local moves from 14:00Z to 13:00Z.
    tz = "America/New_York"
    first = first_run("cron", "0 9 * * *", utc(2026, 3, 7, 15, 0), tz)
    assert first == utc(2026, 3, 8, 13, 0)
    assert next_run("cron", "0 9 * * *", first, utc(2026, 3, 8, 13, 0), tz) == utc(2026, 3, 9, 13, 0)
    assert first_run("cron", "0 9 * * *", utc(2026, 3, 6, 12, 0), tz) == utc(2026, 3, 6, 14, 0)


def test_cron_keeps_local_wall_time_across_fall_back() -> None:
    # EDT -> EST on 2026-11-01: 09:00 local moves from 13:00Z to 14:00Z.
    assert first_run("cron", "0 9 * * *", utc(2026, 10, 31, 14, 0), "America/New_York") == utc(
        2026, 11, 1, 14, 0
    )


def test_cron_in_europe_across_dst() -> None:
    # Europe/Paris goes CET -> CEST on 2026-03-29.
    assert first_run("cron", "0 9 * * *", utc(2026, 3, 28, 9, 0), "Europe/Paris") == utc(2026, 3, 29, 7, 0)


def test_fixed_hour_cron_fires_once_in_the_repeated_fall_back_hour() -> None:
    # 01:30 happens twice on 2026-11-01 in New York (05:30Z EDT, 06:30Z EST); a daily job runs once.
    tz = "America/New_York"
    first = first_run("cron", "30 1 * * *", utc(2026, 11, 1, 4, 0), tz)
    assert first == utc(2026, 11, 1, 5, 30)
    assert next_run("cron", "30 1 * * *", first, utc(2026, 11, 1, 5, 30), tz) == utc(2026, 11, 2, 6, 30)
    # Starting inside the second pass does not fire the repeat either.
    assert first_run("cron", "30 1 * * *", utc(2026, 11, 1, 6, 10), tz) == utc(2026, 11, 2, 6, 30)
    # Several minutes in the restricted hour: all of them are skipped in the second pass.
    assert next_run("cron", "0,30 1 * * *", None, utc(2026, 11, 1, 5, 30), tz) == utc(2026, 11, 2, 6, 0)


def test_wildcard_hour_cron_fires_in_both_passes_of_the_repeated_hour() -> None:
    tz = "America/New_York"
    assert next_run("cron", "0 * * * *", None, utc(2026, 11, 1, 5, 0), tz) == utc(2026, 11, 1, 6, 0)
    assert next_run("cron", "0 * * * *", None, utc(2026, 11, 1, 6, 0), tz) == utc(2026, 11, 1, 7, 0)
    assert next_run("cron", "*/30 * * * *", None, utc(2026, 11, 1, 5, 45), tz) == utc(2026, 11, 1, 6, 0)


def test_cron_time_in_the_spring_forward_gap_still_fires_that_day() -> None:
    # 02:30 does not exist in New York on 2026-03-08 (02:00 EST -> 03:00 EDT at 07:00Z).
    tz = "America/New_York"
    got = assert_utc(first_run("cron", "30 2 * * *", utc(2026, 3, 8, 5, 0), tz))
    assert utc(2026, 3, 8, 7, 0) <= got <= utc(2026, 3, 8, 7, 30)
    assert next_run("cron", "30 2 * * *", got, got, tz) == utc(2026, 3, 9, 6, 30)


def test_naive_now_is_read_as_utc() -> None:
    assert first_run("cron", "0 9 * * *", datetime(2026, 1, 1, 8, 0), "UTC") == utc(2026, 1, 1, 9, 0)


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "bad",
        "* * * *",
        "60 * * * *",
        "0 24 * * *",
        "* * 32 * *",
        "0 9 * * * 2026",
        "* * * * * * *",
        "@never",
    ],
)
def test_invalid_cron_is_rejected(expr: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        first_run("cron", expr, utc(2026, 1, 1), "UTC")
    with pytest.raises(ValueError, match="cron"):
        next_run("cron", expr, None, utc(2026, 1, 1), "UTC")
    with pytest.raises(ValueError, match="cron"):
        validate_schedule("cron", expr, "UTC")


# -- interval ---------------------------------------------------------------------------------


def test_interval_first_run_is_now_plus_ms() -> None:
    assert first_run("interval", "3600000", utc(2026, 1, 1, 10, 0), "UTC") == utc(2026, 1, 1, 11, 0)
    assert first_run("interval", "1500", utc(2026, 1, 1), "UTC") == utc(2026, 1, 1) + timedelta(
        milliseconds=1500
    )
    assert first_run("interval", " 60000 ", utc(2026, 1, 1), "UTC") == utc(2026, 1, 1, 0, 1)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2026, 1, 1, 10, 0, 5), utc(2026, 1, 1, 11, 0)),  # ran on time
        (utc(2026, 1, 1, 10, 59, 59), utc(2026, 1, 1, 11, 0)),  # long run, next slot still ahead
        (utc(2026, 1, 1, 11, 0), utc(2026, 1, 1, 12, 0)),  # never returns a time <= now
        (utc(2026, 1, 1, 13, 30), utc(2026, 1, 1, 14, 0)),  # missed 11:00, 12:00, 13:00: skipped
        (utc(2026, 1, 3, 10, 0), utc(2026, 1, 3, 11, 0)),  # two days late, still on the grid
        (utc(2026, 1, 1, 9, 59), utc(2026, 1, 1, 11, 0)),  # now before the scheduled time
    ],
)
def test_interval_next_run_stays_on_the_grid(now: datetime, expected: datetime) -> None:
    got = assert_utc(next_run("interval", "3600000", utc(2026, 1, 1, 10, 0), now, "UTC"))
    assert got == expected
    assert got > now


def test_interval_grid_with_sub_second_step() -> None:
    got = next_run("interval", "1500", utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 0, 4), "UTC")
    assert got == utc(2026, 1, 1, 10, 0, 4) + timedelta(milliseconds=500)


def test_interval_is_elapsed_time_not_wall_time_across_dst() -> None:
    # 24 h after 09:00 EST is 10:00 EDT: intervals do not follow the local clock.
    got = next_run(
        "interval", "86400000", utc(2026, 3, 7, 14, 0), utc(2026, 3, 7, 14, 0, 1), "America/New_York"
    )
    assert got == utc(2026, 3, 8, 14, 0)


def test_interval_without_scheduled_time_anchors_to_now() -> None:
    assert next_run("interval", "60000", None, utc(2026, 1, 1, 10, 0), "UTC") == utc(2026, 1, 1, 10, 1)


def test_interval_accepts_naive_datetimes_as_utc() -> None:
    got = next_run("interval", "3600000", datetime(2026, 1, 1, 10, 0), datetime(2026, 1, 1, 13, 30), "UTC")
    assert assert_utc(got) == utc(2026, 1, 1, 14, 0)


@pytest.mark.parametrize("value", ["0", "-5", "abc", "", "   ", "1.5", "10abc", "1e3", "+100", "0x10"])
def test_invalid_interval_is_rejected_at_creation(value: str) -> None:
    with pytest.raises(ValueError, match="interval"):
        first_run("interval", value, utc(2026, 1, 1), "UTC")
    with pytest.raises(ValueError, match="interval"):
        validate_schedule("interval", value, "UTC")


@pytest.mark.parametrize("value", ["0", "-5", "abc", ""])
def test_invalid_stored_interval_retries_in_a_minute(value: str) -> None:
    assert next_run("interval", value, utc(2026, 1, 1), utc(2026, 1, 1, 10, 0), "UTC") == utc(
        2026, 1, 1, 10, 1
    )


# -- once -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tz", "expected"),
    [
        ("2026-02-01T15:30:00", "UTC", utc(2026, 2, 1, 15, 30)),
        ("2026-02-01T15:30:00", "America/New_York", utc(2026, 2, 1, 20, 30)),  # local time in the tz
        ("2026-02-01T15:30:00", "Europe/Paris", utc(2026, 2, 1, 14, 30)),
        ("2026-07-01T15:30:00", "Europe/Paris", utc(2026, 7, 1, 13, 30)),  # summer offset
        ("2026-02-01T15:30:00Z", "America/New_York", utc(2026, 2, 1, 15, 30)),  # aware: as given
        ("2026-02-01T15:30:00+02:00", "UTC", utc(2026, 2, 1, 13, 30)),
        ("2026-02-01T15:30:00.250", "UTC", utc(2026, 2, 1, 15, 30) + timedelta(milliseconds=250)),
        ("2026-02-01 15:30", "UTC", utc(2026, 2, 1, 15, 30)),
    ],
)
def test_once_first_run(value: str, tz: str, expected: datetime) -> None:
    assert assert_utc(first_run("once", value, utc(2026, 1, 1), tz)) == expected


def test_once_in_the_past_is_accepted_and_due_immediately() -> None:
    assert first_run("once", "2025-01-01T00:00:00", utc(2026, 1, 1), "UTC") == utc(2025, 1, 1)


def test_once_local_time_at_dst_edges() -> None:
    tz = "America/New_York"
    # Skipped 02:30 moves forward by the gap (03:30 EDT), like JavaScript's Date.
    assert first_run("once", "2026-03-08T02:30:00", utc(2026, 1, 1), tz) == utc(2026, 3, 8, 7, 30)
    # Repeated 01:30 is its first occurrence (EDT).
    assert first_run("once", "2026-11-01T01:30:00", utc(2026, 1, 1), tz) == utc(2026, 11, 1, 5, 30)


def test_once_has_no_next_run() -> None:
    assert (
        next_run("once", "2026-02-01T15:30:00", utc(2026, 2, 1, 15, 30), utc(2026, 2, 1, 15, 31), "UTC")
        is None
    )
    assert next_run("once", "garbage", None, utc(2026, 1, 1), "UTC") is None


@pytest.mark.parametrize("value", ["tomorrow", "", "2026-13-01T00:00:00", "2026-02-30T10:00:00", "15:30"])
def test_invalid_once_is_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="once"):
        first_run("once", value, utc(2026, 1, 1), "UTC")
    with pytest.raises(ValueError, match="once"):
        validate_schedule("once", value, "UTC")


# -- types and timezones ----------------------------------------------------------------------


@pytest.mark.parametrize("schedule_type", ["weekly", "CRON", "", "Interval"])
def test_unknown_schedule_type_is_rejected(schedule_type: str) -> None:
    with pytest.raises(ValueError, match="schedule_type"):
        first_run(schedule_type, "60000", utc(2026, 1, 1), "UTC")
    with pytest.raises(ValueError, match="schedule_type"):
        next_run(schedule_type, "60000", None, utc(2026, 1, 1), "UTC")
    with pytest.raises(ValueError, match="schedule_type"):
        validate_schedule(schedule_type, "60000", "UTC")


@pytest.mark.parametrize(
    ("schedule_type", "value"),
    [("cron", "0 9 * * *"), ("interval", "60000"), ("once", "2026-02-01T15:30:00")],
)
def test_invalid_timezone_is_rejected(schedule_type: str, value: str) -> None:
    with pytest.raises(ValueError, match="timezone"):
        first_run(schedule_type, value, utc(2026, 1, 1), "Mars/Olympus")
    with pytest.raises(ValueError, match="timezone"):
        validate_schedule(schedule_type, value, "Mars/Olympus")


@pytest.mark.parametrize(
    ("schedule_type", "value"),
    [
        ("cron", "0 9 * * *"),
        ("cron", "*/15 8-17 * * 1-5"),
        ("interval", "1"),
        ("once", "2026-02-01T15:30:00"),
    ],
)
def test_validate_schedule_accepts_valid_schedules(schedule_type: str, value: str) -> None:
    assert validate_schedule(schedule_type, value, "Europe/Paris") is None


# -- last_result ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "error", "expected"),
    [
        (None, "boom", "Error: boom"),
        ("partial output", "timed out", "Error: timed out"),  # an error wins over a result
        ("done", None, "done"),
        ("x" * 200, None, "x" * 200),
        ("x" * 201, None, "x" * 200),
        ("é" * 300, None, "é" * 200),
        (None, None, "Completed"),  # e.g. the pre-check script did not wake the agent
        ("", None, "Completed"),
        ("done", "", "done"),  # an empty error counts as none
    ],
)
def test_truncate_result(result: str | None, error: str | None, expected: str) -> None:
    assert truncate_result(result, error) == expected


# -- a task runs with its group's powers only in that group's chat (security) --------------------


def test_a_task_pairing_mains_folder_with_another_chat_never_runs_as_main(engine, tmp_path) -> None:
    register(engine, "fake:main", folder="main_g", is_main=True)
    register(engine, "fake:other", folder="other")
    now = datetime.now(tz=UTC)
    with write_tx(engine) as conn:  # as a hostile import or a hand-edited row would leave it
        tasks.create_task(
            conn, id="hijack", group_folder="main_g", chat_jid="fake:other", prompt="act as main",
            schedule_type="interval", schedule_value="3600000", next_run=iso(now - timedelta(seconds=1)),
        )  # fmt: skip
    assert claim_due_tasks(engine, timezone="UTC", now=now) == ["fake:other"]
    calls: list[AgentRequest] = []

    def agent(request: AgentRequest, on_step) -> AgentResult:
        calls.append(request)
        return AgentResult(text="ran")

    assert process_group(router_deps(engine, tmp_path, agent=agent), "fake:other") == "drained"
    assert calls == []  # the agent never ran, with main's powers or any other
    assert outbox_rows(engine) == []
    with read_tx(engine) as conn:
        task = tasks.get_task(conn, "hijack")
        logs = tasks.task_run_logs(conn, "hijack")
        kinds = [r["kind"] for r in audit.recent(conn)]
    assert task is not None and task.status == "paused"
    assert [log.status for log in logs] == ["error"]
    assert logs[0].error is not None and "not the chat registered to folder 'main_g'" in logs[0].error
    assert "router.task_refused" in kinds
