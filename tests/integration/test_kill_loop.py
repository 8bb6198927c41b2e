"""SIGKILL of the default worker in a loop under load: no role stays frozen, nothing is lost.

The old stack ran the router and outbound roles on Celery's prefork pool, where one SIGKILLed
pool child froze the whole pool on the SQLite broker (issue 11: frozen after 2-9 kills). The
default worker now runs the threads pool (router, outbound and maintenance in one process),
and threads cannot be killed one by one, so this kills the whole worker process 50 times while
messages stream in over 10 groups, restarting it each time as honcho/systemd would. Each
restarted worker must deliver new replies within 10 s (about half of the kills wait for that,
the others strike at a random moment of start-up or work), and at the end every message is
answered exactly once, in order.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import defaultdict

import pytest

from microclaw.envelope import make_envelope
from microclaw.pipeline.inbound import ingest_and_kick
from tests.integration.stack import wait_for

pytestmark = pytest.mark.slow

KILLS = 50
GROUPS = 10
FROZEN_S = 10.0


def test_fifty_worker_kills_under_load_freeze_nothing_and_lose_nothing(make_stack) -> None:
    stack = make_stack(MICROCLAW_ROUTER__MAX_MESSAGES_PER_PROMPT="1000")
    chats = [f"local:kill{g}" for g in range(GROUPS)]
    stack.register_chats(chats)
    stack.combined("worker-0", 5)
    stack.beat()
    stack.wait_workers(2)

    sent: dict[str, list[str]] = defaultdict(list)
    stop = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        n = 0
        try:
            while not stop.is_set():
                chat = chats[n % GROUPS]
                text = f"m{n}"
                env = make_envelope(source="local", message_id=f"{chat}:{n}", chat_id=chat, text=text)
                ingest_and_kick(stack.engine, env, stack.kick)
                sent[chat].append(text)
                n += 1
                time.sleep(0.03)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    rng = random.Random(11)
    waits: list[float] = []
    try:
        for k in range(KILLS):
            if k % 2 == 0:
                before = len(stack.replies())
                started = time.monotonic()
                wait_for(
                    lambda before=before: len(stack.replies()) > before,
                    FROZEN_S,
                    f"worker incarnation {k} to deliver a reply (frozen role)",
                    interval=0.05,
                )
                waits.append(time.monotonic() - started)
            else:
                time.sleep(rng.uniform(0.1, 1.0))
            stack.kill(f"worker-{k}")
            stack.combined(f"worker-{k + 1}", 5)
    finally:
        stop.set()
        producer.join(timeout=10)
    assert not errors, errors
    # A group whose runs were killed five times in a row has used its retries and waits for its
    # next message (NanoClaw's rule; its cursor is rolled back): one more message each wakes it.
    for chat in chats:
        env = make_envelope(source="local", message_id=f"{chat}:last", chat_id=chat, text="last")
        ingest_and_kick(stack.engine, env, stack.kick)
        sent[chat].append("last")
    assert sum(len(v) for v in sent.values()) > 5 * KILLS  # the stream really was under way

    def answered() -> bool:
        seen = stack.seen_by_chat()
        return all(len(seen[c]) >= len(sent[c]) for c in chats)

    wait_for(answered, 60, "every message to be answered after the last restart")
    time.sleep(2)  # long enough for a duplicate to show up (sweeps every 0.5 s)
    seen = stack.seen_by_chat()
    for chat in chats:
        assert seen[chat] == sent[chat], f"{chat}: lost, duplicated or out of order"
    print(f"{KILLS} kills; restart to reply: max {max(waits):.1f} s, mean {statistics.mean(waits):.1f} s")
