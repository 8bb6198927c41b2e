"""2000 messages over 40 groups through real prefork workers on the SQLite broker.

Checks the guarantees the design rests on: per-group order, no duplicates, no losses, never
two runs of one group at once, and a global concurrency that reaches (and never exceeds) the
worker pool size.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import pytest
from sqlalchemy import select

from microclaw.envelope import make_envelope
from microclaw.pipeline.inbound import ingest_and_kick
from microclaw.store import groups
from microclaw.store.db import read_tx, write_tx
from microclaw.store.models import OutboxEntry, Run
from tests.integration.stack import wait_for

pytestmark = pytest.mark.slow

GROUPS = 40
PER_GROUP = 50


def chat(g: int) -> str:
    return f"local:g{g:02d}"


def parse_seen(text: str) -> list[str]:
    assert text.startswith("seen: "), text
    return text.removeprefix("seen: ").split(" | ")


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def test_order_no_loss_no_duplicates_one_run_per_group(make_stack) -> None:
    stack = make_stack(
        MICROCLAW_AGENT__SCRIPTED_DELAY_S="0.03", MICROCLAW_ROUTER__MAX_MESSAGES_PER_PROMPT="1000"
    )
    with write_tx(stack.engine) as conn:
        for g in range(GROUPS):
            groups.register_group(
                conn,
                jid=chat(g),
                name=f"g{g}",
                folder=f"local_g{g:02d}",
                trigger="@Andy",
                requires_trigger=False,
            )
    stack.router("router-a", 2)
    stack.router("router-b", 2)
    stack.outbound()
    stack.beat()
    stack.wait_workers(3)

    expected: dict[str, list[str]] = {
        chat(g): [f"g{g:02d}-m{i:03d}" for i in range(PER_GROUP)] for g in range(GROUPS)
    }

    def produce(group_ids: range) -> None:
        for i in range(PER_GROUP):
            for g in group_ids:
                text = expected[chat(g)][i]
                env = make_envelope(
                    source="local",
                    message_id=f"{chat(g)}:{i}",
                    chat_id=chat(g),
                    text=text,
                    sender="u",
                    sender_name="U",
                )
                ingest_and_kick(stack.engine, env, stack.kick)

    producers = [threading.Thread(target=produce, args=(range(k, GROUPS, 2),)) for k in range(2)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()

    def all_seen() -> bool:
        seen = defaultdict(list)
        for item in stack.mailbox.after(0, limit=100_000):
            seen[item.chat_id].extend(parse_seen(item.text))
        return all(seen[c] and seen[c][-1] == msgs[-1] for c, msgs in expected.items())

    wait_for(all_seen, 240, "every group's last message to be answered", interval=0.5)

    replies = defaultdict(list)
    for item in stack.mailbox.after(0, limit=100_000):
        replies[item.chat_id].extend(parse_seen(item.text))
    for c, msgs in expected.items():
        assert replies[c] == msgs, f"{c}: order, loss or duplicate"

    with read_tx(stack.engine) as conn:
        run_rows = conn.execute(select(Run.__table__).where(Run.__table__.c.kind == "messages")).all()
        outbox = conn.execute(select(OutboxEntry.__table__)).all()
    assert all(r.status == "done" for r in run_rows)
    assert len(outbox) == len(run_rows) == sum(1 for _ in stack.mailbox.after(0, limit=100_000))
    assert {o.status for o in outbox} == {"delivered"}
    by_group = defaultdict(list)
    for r in run_rows:
        by_group[r.chat_jid].append((r.started_at, r.finished_at))
    for c, intervals in by_group.items():
        assert peak_overlap(intervals) == 1, f"two runs of {c} overlapped"
    assert peak_overlap([(r.started_at, r.finished_at) for r in run_rows]) == 4


def test_the_default_worker_runs_at_most_router_concurrency_groups_at_once(make_stack) -> None:
    # The default stack's one worker has router.concurrency + EXTRA_THREADS threads (for
    # deliveries and upkeep); kicks beyond the run cap wait for a slot instead of running.
    cap, n_groups = 2, 6
    stack = make_stack(MICROCLAW_AGENT__SCRIPTED_DELAY_S="0.5", MICROCLAW_ROUTER__CONCURRENCY=str(cap))
    with write_tx(stack.engine) as conn:
        for g in range(n_groups):
            groups.register_group(
                conn,
                jid=chat(g),
                name=f"g{g}",
                folder=f"local_g{g:02d}",
                trigger="@Andy",
                requires_trigger=False,
            )
    stack.combined("worker", concurrency=cap + 3)
    stack.wait_workers(1)
    for g in range(n_groups):
        env = make_envelope(
            source="local", message_id=f"{chat(g)}:0", chat_id=chat(g), text="hi", sender="u", sender_name="U"
        )
        ingest_and_kick(stack.engine, env, stack.kick)
    wait_for(
        lambda: sum(1 for _ in stack.mailbox.after(0, limit=1000)) >= n_groups, 120, "every group's reply"
    )
    with read_tx(stack.engine) as conn:
        run_rows = conn.execute(select(Run.__table__).where(Run.__table__.c.kind == "messages")).all()
    assert len(run_rows) == n_groups
    assert peak_overlap([(r.started_at, r.finished_at) for r in run_rows]) == cap
