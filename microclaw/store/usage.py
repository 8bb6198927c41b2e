"""Agent spend: tokens in/out and cost per run, per group and UTC day.

`record` appends one row per run (in the caller's transaction); `tokens_today` sums a group's
tokens for the current UTC day, which the agent compares with ``agent.daily_token_budget``
before each model call. Does not decide anything about budgets itself.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, text

from microclaw.store.db import now_ms

_INSERT = text(
    "INSERT INTO agent_usage (run_id, chat_jid, group_folder, day, model, steps, input_tokens,"
    " output_tokens, cost, created_at_ms) VALUES (:run_id, :chat, :folder, :day, :model, :steps, :inp,"
    " :out, :cost, :now)"
)
_TODAY = text(
    "SELECT COALESCE(SUM(input_tokens + output_tokens), 0) FROM agent_usage"
    " WHERE group_folder = :folder AND day = :day"
)


def utc_day(moment: datetime | None = None) -> str:
    return (moment or datetime.now(tz=UTC)).astimezone(UTC).strftime("%Y-%m-%d")


def record(
    conn: Connection,
    *,
    run_id: int | None,
    chat_jid: str,
    group_folder: str,
    model: str | None,
    steps: int,
    input_tokens: int,
    output_tokens: int,
    cost: float,
    day: str | None = None,
) -> None:
    """Append the usage of one run."""
    conn.execute(
        _INSERT,
        {
            "run_id": run_id,
            "chat": chat_jid,
            "folder": group_folder,
            "day": day or utc_day(),
            "model": model,
            "steps": steps,
            "inp": input_tokens,
            "out": output_tokens,
            "cost": cost,
            "now": now_ms(),
        },
    )


def tokens_today(conn: Connection, group_folder: str, day: str | None = None) -> int:
    """Tokens (in + out) the group used on ``day`` (default: today, UTC)."""
    return int(conn.execute(_TODAY, {"folder": group_folder, "day": day or utc_day()}).scalar_one())
