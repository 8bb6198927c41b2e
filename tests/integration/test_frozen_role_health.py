"""Health sees a role that has ready work and does not take it, not only a dead heartbeat.

The old health check only asked whether each role's heartbeat thread was alive: a frozen pool
with a live parent answered ``ok`` for minutes while acknowledged messages waited (issue 11).
Here the default worker is SIGSTOPped while messages wait: `/health` and ``microclaw-host
health`` must name the router queue's waiting work within a bounded number of checks (before
the heartbeat goes stale, so the heartbeat alone cannot be what they see), and health must
come back once the worker is SIGCONTinued and has answered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from microclaw.runtime.status import READY_STALE_MS
from tests.integration.stack import BIN, wait_for

pytestmark = pytest.mark.slow

CHECK_EVERY_S = 1.0
# Ready work older than READY_STALE_MS fails health; the heartbeat would go stale only at 20 s.
MAX_CHECKS = int(READY_STALE_MS / 1000 / CHECK_EVERY_S) + 5


def test_a_stopped_worker_with_waiting_work_fails_health_and_recovers(make_stack) -> None:
    stack = make_stack()
    stack.host()
    stack.combined("worker", 5)
    stack.beat()
    stack.wait_host()
    stack.wait_workers(2)
    with stack.http() as client:
        wait_for(lambda: client.get("/health").status_code == 200, 30, "health before the freeze")
        worker = stack.procs["worker"]
        os.killpg(worker.pid, signal.SIGSTOP)
        try:
            for i in range(3):
                assert client.post("/api/chat", json={"text": f"waiting {i}"}).status_code == 202
            problems: list[str] = []
            for _check in range(MAX_CHECKS):
                time.sleep(CHECK_EVERY_S)
                answer = client.get("/health")
                problems = answer.json().get("problems", [])
                if answer.status_code == 503 and any("microclaw.router: ready work" in p for p in problems):
                    break
            else:
                pytest.fail(f"health did not see the frozen router within {MAX_CHECKS} checks: {problems}")
            cli = subprocess.run(
                [str(BIN / "microclaw-host"), "health"],
                env=stack.env,
                cwd=stack.root,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 1
            assert "microclaw.router: ready work" in cli.stderr.replace("\n", " ")
            status = client.get("/status").json()
            assert status["queue_waits"]["microclaw.router"] > READY_STALE_MS
        finally:
            os.killpg(worker.pid, signal.SIGCONT)
        for _check in range(MAX_CHECKS * 2):
            time.sleep(CHECK_EVERY_S)
            if client.get("/health").status_code == 200:
                break
        else:
            pytest.fail(f"health did not recover after SIGCONT: {client.get('/health').json()}")

        def answered() -> list[str]:
            replies = client.get("/api/chat/replies", params={"after": 0}).json()["replies"]
            texts = [t for r in replies for t in r["text"].removeprefix("seen: ").split(" | ")]
            return texts if len(texts) >= 3 else []

        texts = wait_for(answered, 30, "the waiting messages to be answered")
    assert texts == ["waiting 0", "waiting 1", "waiting 2"]
