"""End to end: a local chat message -> router worker -> agent (real ``anthropic`` SDK against the
fake Anthropic API) -> a sandbox tool in a real container (sandbox worker + Docker test image)
-> exactly one reply on the local channel.

Processes: the host (local channel), the router, outbound and sandbox workers, as separate
processes on the SQLite broker; the fake model runs in this test process on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import outbox_rows, runs
from tests.integration.agent.fakes import Call, FakeAnthropic, Step
from tests.integration.conftest import make_stack  # noqa: F401 - fixture
from tests.integration.sandbox.conftest import docker_client, sandbox_image  # noqa: F401 - fixtures
from tests.integration.sandbox.test_celery_tasks import start_sandbox_worker
from tests.integration.stack import wait_for

COMMAND = "echo sandbox-$(id -u) > proof.txt && cat proof.txt && pwd"


def _tool_result_text(body: dict[str, Any]) -> str:
    for message in body["messages"]:
        if isinstance(message["content"], list):
            for block in message["content"]:
                if block.get("type") == "tool_result":
                    return str(block["content"])
    return ""


@pytest.fixture
def fake_model() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:

        def responder(body: dict[str, Any]) -> Step:
            result = _tool_result_text(body)
            if not result:
                return Step(
                    text="Let me check in my workspace.", calls=[Call("run_command", {"command": COMMAND})]
                )
            return Step(text=f"The sandbox said: {result.strip()}")

        server.responder = responder
        yield server


@pytest.mark.docker
@pytest.mark.slow
def test_local_message_runs_a_sandbox_tool_and_replies_once(
    make_stack,  # noqa: F811
    sandbox_image,  # noqa: F811
    docker_client,  # noqa: F811
    fake_model: FakeAnthropic,
) -> None:
    instance = f"te2e-{uuid.uuid4().hex[:8]}"
    run_dir = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))
    stack = make_stack(
        MICROCLAW_AGENT__PROVIDER="anthropic",
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=fake_model.base_url,
        MICROCLAW_AGENT__MAX_RETRIES="1",
        MICROCLAW_SANDBOX__IMAGE=sandbox_image,
        MICROCLAW_SANDBOX__INSTANCE=instance,
        MICROCLAW_SANDBOX__RUN_DIR=str(run_dir),
        MICROCLAW_SANDBOX__MEMORY="128m",
        MICROCLAW_SANDBOX__PIDS_LIMIT="64",
        MICROCLAW_SANDBOX__READINESS_INTERVAL_S="1",
        MICROCLAW_SANDBOX__EXEC_TIMEOUT_S="30",
        MICROCLAW_SANDBOX__QUEUE_TIMEOUT_S="60",
    )
    try:
        start_sandbox_worker(stack, "sandbox", "ready")
        stack.router()
        stack.outbound()
        stack.host()
        stack.wait_workers(3, timeout=90)
        stack.wait_host()
        client = stack.http(timeout=10)
        sent = client.post("/api/chat", json={"text": "what does the sandbox say?"})
        assert sent.status_code in (200, 201, 202), sent.text

        def replies() -> list[dict[str, Any]]:
            return client.get("/api/chat/replies", params={"after": 0}).json()["replies"]

        got = wait_for(replies, 120, "the agent's reply on the local channel", interval=0.2)
        time.sleep(1.0)  # a duplicate would be queued right behind the first reply
        final = replies()
        assert [r["text"] for r in final] == [
            "The sandbox said: exit code: 0\nstdout:\nsandbox-1000\n/workspace/group"
        ]
        assert got[0]["text"] == final[0]["text"]
        assert [r.status for r in runs(stack.engine)] == ["done"]
        assert len(outbox_rows(stack.engine)) == 1
        # The command really ran in the group's container: its file is in the group's folder.
        folder = stack.settings.groups_dir / "local_main"
        assert (folder / "proof.txt").read_text() == "sandbox-1000\n"
        assert len(fake_model.requests) == 2
    finally:
        stack.stop()
        for container in docker_client.containers.list(
            all=True, filters={"label": f"microclaw.instance={instance}"}
        ):
            container.remove(force=True)
        shutil.rmtree(run_dir, ignore_errors=True)
