"""The same pipeline on Redis: moving off SQLite is one setting (``broker.url``), no code change."""

from __future__ import annotations

import os
import shutil
from collections import defaultdict

import pytest

from microclaw.envelope import make_envelope
from microclaw.pipeline.inbound import ingest_and_kick
from microclaw.store import groups
from microclaw.store.db import write_tx
from tests.integration.stack import start_redis, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_url(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing on CI (scripts/install-test-deps.sh installs it)")
        pytest.skip("redis-server not installed (run scripts/install-test-deps.sh)")
    proc, url = start_redis(server, tmp_path)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_pipeline_on_redis(make_stack, redis_url: str) -> None:
    stack = make_stack(MICROCLAW_BROKER__URL=redis_url, MICROCLAW_ROUTER__MAX_MESSAGES_PER_PROMPT="1000")
    assert not stack.settings.broker.is_sqlite
    chats = [f"local:r{i}" for i in range(5)]
    with write_tx(stack.engine) as conn:
        for i, chat in enumerate(chats):
            groups.register_group(
                conn, jid=chat, name=chat, folder=f"local_r{i}", trigger="@Andy", requires_trigger=False
            )
    stack.router("router-1", 2)
    stack.outbound()
    stack.beat()
    stack.wait_workers(2)
    expected = defaultdict(list)
    for i in range(100):
        chat = chats[i % 5]
        expected[chat].append(f"m{i}")
        ingest_and_kick(
            stack.engine,
            make_envelope(source="local", message_id=f"{chat}:{i}", chat_id=chat, text=f"m{i}"),
            stack.kick,
        )

    def seen() -> dict[str, list[str]]:
        got = defaultdict(list)
        for item in stack.mailbox.after(0, limit=10_000):
            got[item.chat_id].extend(item.text.removeprefix("seen: ").split(" | "))
        return got

    wait_for(lambda: all(seen()[c][-1:] == expected[c][-1:] for c in chats), 60, "every group's answer")
    assert dict(seen()) == dict(expected)
    assert not (stack.settings.data_dir / "broker.db").exists()  # nothing touched the SQLite broker


def test_status_reads_queue_depths_from_redis(redis_url: str) -> None:
    from kombu import Connection

    from microclaw.broker.transport import queue_depths
    from microclaw.runtime.queues import OUTBOUND, QUEUES, ROUTER

    assert queue_depths(redis_url, QUEUES) == dict.fromkeys(QUEUES, 0)  # nothing published yet
    with Connection(redis_url) as conn:
        waiting = conn.SimpleQueue(ROUTER)
        for i in range(3):
            waiting.put({"i": i})
        taken = conn.SimpleQueue(OUTBOUND)
        taken.put({"i": 0})
        taken.get(timeout=5).ack()
        waiting.close()
        taken.close()
    assert queue_depths(redis_url, QUEUES) == {**dict.fromkeys(QUEUES, 0), ROUTER: 3}


def test_an_unreachable_broker_gives_no_depths_instead_of_failing_status() -> None:
    from microclaw.broker.transport import queue_depths
    from tests.conftest import free_port

    assert queue_depths(f"redis://127.0.0.1:{free_port()}/0", ["microclaw.router"]) == {}
