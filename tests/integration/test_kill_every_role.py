"""SIGKILL of every role of the default stack in a loop while 2,000 messages stream in over 20
groups through the host's HTTP surface, plus one kill of everything at once: nothing that was
acknowledged is lost, nothing is answered twice, order holds, and the groups waiting when a role
comes back are answered soon after.

The default stack is the host and one worker (router, outbound, maintenance, beat as a thread).
Messages go in as the local chat channel's clients send them: ``POST /api/chat`` with a
``client_id``, retried with the same id until the host answers 202 (a message stored by a host
that died before answering is the same message, not a second one). Only a 202 counts as sent.
The killer picks the host or the worker at random, restarts it at once as honcho or systemd
would, and once kills both together. After a restart, each group that was waiting must get a
reply; how long that took is printed (it is not a timing assertion: a role frozen for
`FROZEN_S` fails the test).
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import defaultdict

import httpx
import pytest

from tests.integration.stack import wait_for

pytestmark = pytest.mark.slow

MESSAGES = 2000
GROUPS = 20
KILLS = 24
FROZEN_S = 20.0


def test_every_role_killed_in_a_loop_and_all_at_once_loses_and_repeats_nothing(make_stack) -> None:
    stack = make_stack(MICROCLAW_ROUTER__MAX_MESSAGES_PER_PROMPT="1000")
    chats = [f"local:k{g}" for g in range(GROUPS)]
    stack.register_chats(chats)
    stack.host()
    stack.default_worker("worker-0")
    stack.wait_host()
    stack.wait_workers(1)

    sent: dict[str, list[str]] = defaultdict(list)
    lock = threading.Lock()
    done = threading.Event()
    errors: list[BaseException] = []
    retries = 0

    def post(client: httpx.Client, chat: str, text: str) -> None:
        nonlocal retries
        while True:
            try:
                r = client.post("/api/chat", json={"text": text, "chat_id": chat, "client_id": text})
                if r.status_code == 202:
                    return
                assert r.status_code == 503, (r.status_code, r.text)  # anything else is a bug
            except httpx.HTTPError:
                pass  # the host is down or died mid-request: the same message again
            retries += 1
            time.sleep(0.05)

    def produce() -> None:
        try:
            with stack.http(timeout=5) as client:
                for n in range(MESSAGES):
                    chat, text = chats[n % GROUPS], f"m{n}"
                    post(client, chat, text)
                    with lock:
                        sent[chat].append(text)
                    time.sleep(0.01)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            done.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    rng = random.Random(7)
    answered_after: list[float] = []
    kills: dict[str, int] = defaultdict(int)
    incarnation = {"host": 0, "worker": 0}
    k = 0
    while not done.is_set() and k < KILLS:
        time.sleep(rng.uniform(0.3, 1.5))
        roles = ["host", "worker"] if k == KILLS // 2 else [rng.choice(["host", "worker"])]
        for role in roles:
            stack.kill(f"{role}-{incarnation[role]}" if role == "worker" else "host")
            kills[role] += 1
        restarted = time.monotonic()
        with lock:
            waiting = {c: len(v) for c, v in sent.items()}
        seen = stack.seen_by_chat()
        waiting = {c: n for c, n in waiting.items() if len(seen[c]) < n}
        for role in roles:
            incarnation[role] += 1
            if role == "host":
                stack.host()
            else:
                stack.default_worker(f"worker-{incarnation[role]}")
        if k % 3 == 0 and waiting:  # every third kill: wait for the waiting groups' answers

            def caught_up(waiting: dict[str, int] = waiting) -> bool:
                now = stack.seen_by_chat()
                return all(len(now[c]) >= n for c, n in waiting.items())

            wait_for(caught_up, FROZEN_S, f"the groups waiting at kill {k} ({roles}) to be answered")
            answered_after.append(time.monotonic() - restarted)
        k += 1
    producer.join(timeout=300)
    assert not errors, errors
    assert done.is_set() and sum(len(v) for v in sent.values()) == MESSAGES
    assert kills["host"] >= 3 and kills["worker"] >= 3, kills
    stack.wait_host()
    # A group whose runs were killed five times in a row has used its retries and waits for its
    # next message (NanoClaw's rule): one more message each wakes it.
    with stack.http(timeout=5) as client:
        for chat in chats:
            post(client, chat, f"last-{chat}")
            sent[chat].append(f"last-{chat}")

    def all_answered() -> bool:
        now = stack.seen_by_chat()
        return all(len(now[c]) >= len(sent[c]) for c in chats)

    wait_for(all_answered, 90, "every message to be answered after the last restart")
    time.sleep(2)  # long enough for a duplicate to show up (sweeps every 0.5 s)
    seen = stack.seen_by_chat()
    for chat in chats:
        assert seen[chat] == sent[chat], f"{chat}: lost, duplicated or out of order"
    print(
        f"{MESSAGES} messages over {GROUPS} groups; kills: {dict(kills)} (one of both at once);"
        f" {retries} client retries; restart to waiting groups answered:"
        f" max {max(answered_after):.1f} s, median {statistics.median(answered_after):.1f} s"
        f" (n={len(answered_after)})"
    )
