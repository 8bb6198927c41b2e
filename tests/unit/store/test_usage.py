"""store.usage: spend per run, summed per group and UTC day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import Engine

from microclaw.store import usage
from microclaw.store.db import read_tx, write_tx


def spend(conn, folder: str, day: str, inp: int, out: int) -> None:
    usage.record(
        conn,
        run_id=1,
        chat_jid="fake:a",
        group_folder=folder,
        model="m",
        steps=1,
        input_tokens=inp,
        output_tokens=out,
        cost=0.01,
        day=day,
    )


def test_tokens_are_summed_per_group_and_day(engine: Engine) -> None:
    with write_tx(engine) as conn:
        spend(conn, "team", "2026-01-01", 10, 5)
        spend(conn, "team", "2026-01-01", 1, 2)
        spend(conn, "team", "2026-01-02", 100, 100)
        spend(conn, "other", "2026-01-01", 7, 7)
    with read_tx(engine) as conn:
        assert usage.tokens_today(conn, "team", "2026-01-01") == 18
        assert usage.tokens_today(conn, "nobody", "2026-01-01") == 0


def test_the_day_is_the_utc_day() -> None:
    late_evening_west = datetime(2026, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert usage.utc_day(late_evening_west) == "2026-01-02"
    assert usage.utc_day(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01"
