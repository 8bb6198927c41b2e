"""Contract §4.6 against a real sandbox worker and container (Docker test image): a scheduled
task's pre-check script runs in the group's container, and its last stdout line decides whether
the model is called. The router and agent run in this process (real SQLite, real lease); the
model is a recording double.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

import pytest

from microclaw.agent.providers.base import BaseProvider, ChatTurn, Completion
from microclaw.config import AgentSettings
from microclaw.core.formatting import wrap_scheduled_prompt
from microclaw.pipeline.router import process_group
from microclaw.runtime.wiring import build_agent
from microclaw.scheduler.tick import claim_due_tasks, iso
from microclaw.store import audit, tasks
from microclaw.store.db import read_tx, write_tx
from tests.helpers import outbox_rows, register, router_deps
from tests.integration.sandbox.conftest import docker_client, sandbox_image  # noqa: F401 - fixtures
from tests.integration.sandbox.test_celery_tasks import sandbox_stack  # noqa: F401 - fixture

CHAT, FOLDER = "local:pre", "precheck"
QUIET = 'echo "nothing new"\necho \'{"wakeAgent": false, "data": {"new": 0}}\'\n'
# Runs only in the container: uid 1000, the workspace as cwd, a temp file under /tmp, busybox sh.
WAKE = (
    "n=$(id -u)\n"
    "echo checked > precheck-ran.txt\n"
    'echo "found some"\n'
    'printf \'{"wakeAgent": true, "data": {"uid": %s, "cwd": "%s", "script": "%s"}}\\n\' "$n" "$(pwd)" "$0"\n'
    "echo\n"
)
BROKEN = "echo '{\"wakeAgent\": true}'\nexit 3\n"


class Model(BaseProvider):
    name: ClassVar[str] = "recording"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> Self:
        return cls()

    def complete(self, system: str, turns: list[ChatTurn], tools: list[dict[str, Any]]) -> Completion:
        self.prompts.append(turns[-1].content)
        return Completion("woken with news")


@pytest.mark.docker
@pytest.mark.slow
def test_the_pre_check_script_runs_in_the_container_and_decides_the_model_call(sandbox_stack) -> None:  # noqa: F811
    sb = sandbox_stack()
    sb.start_worker()
    engine = sb.stack.engine
    register(engine, CHAT, folder=FOLDER, requires_trigger=False)
    due = iso(datetime.now(tz=UTC) - timedelta(minutes=1))
    with write_tx(engine) as conn:
        for task_id, script in (("quiet", QUIET), ("wake", WAKE), ("broken", BROKEN)):
            tasks.create_task(
                conn,
                id=task_id,
                group_folder=FOLDER,
                chat_jid=CHAT,
                prompt=f"report {task_id}",
                schedule_type="once",
                schedule_value="2026-01-01T09:00:00",
                next_run=due,
                script=script,
            )
    assert claim_due_tasks(engine, timezone="UTC") == [CHAT]
    model = Model()
    agent = build_agent(
        AgentSettings(),
        model,
        assistant_name="Andy",
        engine=engine,
        groups_dir=sb.groups_dir,
        archive_dir=sb.groups_dir.parent / "conversations",
        timezone="UTC",
        sandbox=sb.client(),
    )
    assert process_group(router_deps(engine, sb.groups_dir.parent, agent=agent), CHAT) == "drained"

    # Only the woken task reached the model, with the script's data from inside the container.
    (prompt,) = model.prompts
    head, _, tail = prompt.partition("\n\nInstructions:\n")
    assert tail == "report wake" and head.startswith("[SCHEDULED TASK]\n\nScript output:\n")
    data = json.loads(head.removeprefix("[SCHEDULED TASK]\n\nScript output:\n"))
    assert data["uid"] == 1000 and data["cwd"] == "/workspace/group"
    assert data["script"].startswith("/tmp/task-script.")
    assert prompt == wrap_scheduled_prompt("report wake", data)
    assert (sb.groups_dir / FOLDER / "precheck-ran.txt").read_text() == "checked\n"
    assert [r.text for r in outbox_rows(engine)] == ["woken with news"]

    with read_tx(engine) as conn:
        results = {t: tasks.get_task(conn, t) for t in ("quiet", "wake", "broken")}
        logs = {t: [(x.status, x.result) for x in tasks.task_run_logs(conn, t)] for t in results}
        decisions = sorted(
            (r["decision"], r["detail"]["reason"]) for r in audit.recent(conn, kind="scheduler.precheck")
        )
        execs = [
            r
            for r in audit.recent(conn, kind="sandbox.exec", limit=1000)
            if r["detail"].get("tool") == "task_precheck"
        ]
    assert {t: task.last_result for t, task in results.items() if task} == {
        "quiet": "Completed",
        "wake": "woken with news",
        "broken": "Completed",
    }
    assert logs == {
        "quiet": [("success", None)],
        "wake": [("success", "woken with news")],
        "broken": [("success", None)],
    }
    assert decisions == [("error", "exit code 3"), ("skip", "wakeAgent false"), ("wake", "wakeAgent true")]
    assert len(execs) == 3 and all(r["detail"]["group"] == FOLDER for r in execs)  # run by the sandbox worker
    # The temp files were removed from the container's /tmp.
    leftover = sb.client().exec(FOLDER, ["sh", "-c", "ls /tmp | grep -c task-script || true"])
    assert leftover.stdout_text.strip() == "0"
