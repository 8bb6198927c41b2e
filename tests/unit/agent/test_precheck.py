"""Contract §4.6: a scheduled task's pre-check script, its decision rule and how the agent uses it.

The sandbox here is a recording double that answers with canned `ExecResult`s (nothing runs);
the real container is covered in tests/integration/agent/test_task_precheck_sandbox.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from microclaw.agent.loop import Agent, AgentRequest
from microclaw.agent.precheck import (
    MAX_STDOUT_BYTES,
    PRECHECK_TIMEOUT_S,
    PRECHECK_TOOL,
    PrecheckResult,
    judge_exec,
    parse_precheck_output,
    precheck_prompt,
    run_precheck,
)
from microclaw.agent.providers.base import Completion
from microclaw.config import AgentSettings
from microclaw.core.formatting import wrap_scheduled_prompt
from microclaw.errors import SandboxUnavailable, TransientSandboxError
from microclaw.runtime.wiring import build_agent
from microclaw.sandbox.base import ExecResult
from microclaw.store import audit
from microclaw.store.db import read_tx
from tests.unit.agent.test_loop import Recording


def out(
    stdout: str | bytes, code: int = 0, *, timed_out: bool = False, truncated: bool = False
) -> ExecResult:
    data = stdout.encode() if isinstance(stdout, str) else stdout
    return ExecResult(code, data, b"", truncated, 5, timed_out, len(data), 0)


# --- the decision rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ('{"wakeAgent": true, "data": {"n": 2}}', PrecheckResult("wake", "wakeAgent true", {"n": 2})),
        ('{"wakeAgent": true}', PrecheckResult("wake", "wakeAgent true", None)),
        ('{"wakeAgent": false, "data": {"n": 0}}', PrecheckResult("skip", "wakeAgent false")),
        # The LAST non-empty line decides; log lines and trailing blank lines before/after are fine.
        (
            'checking...\nfound 3\n{"wakeAgent": true, "data": [1, 2]}\n\n  \n',
            PrecheckResult("wake", "wakeAgent true", [1, 2]),
        ),
        ('{"wakeAgent": true}\n{"wakeAgent": false}\n', PrecheckResult("skip", "wakeAgent false")),
        ('{"wakeAgent": false}\ndone\n', PrecheckResult("error", "last output line is not JSON")),
        ("", PrecheckResult("error", "no output")),
        ("\n   \n\n", PrecheckResult("error", "no output")),
        ("{not json", PrecheckResult("error", "last output line is not JSON")),
        ('{"wakeAgent": "true"}', PrecheckResult("error", "no boolean wakeAgent in the last output line")),
        ('{"wakeAgent": 1}', PrecheckResult("error", "no boolean wakeAgent in the last output line")),
        ('{"data": {"n": 1}}', PrecheckResult("error", "no boolean wakeAgent in the last output line")),
        ("[true]", PrecheckResult("error", "no boolean wakeAgent in the last output line")),
        ("true", PrecheckResult("error", "no boolean wakeAgent in the last output line")),
    ],
)
def test_the_last_non_empty_line_must_be_json_with_a_boolean_wake_agent(
    stdout: str, expected: PrecheckResult
) -> None:
    assert parse_precheck_output(stdout) == expected


def test_only_wake_wakes() -> None:
    assert PrecheckResult("wake", "").wake
    assert not PrecheckResult("skip", "").wake and not PrecheckResult("error", "").wake


def test_a_failed_timed_out_or_oversized_script_is_an_error_whatever_it_printed() -> None:
    wake = '{"wakeAgent": true}\n'
    assert judge_exec(out(wake)).decision == "wake"
    assert judge_exec(out(wake, 1)) == PrecheckResult("error", "exit code 1")
    assert judge_exec(out(wake, 137, timed_out=True)) == PrecheckResult("error", "timed out after 30 s")
    assert judge_exec(out(wake, truncated=True)) == PrecheckResult("error", "stdout larger than 1 MB")
    big = ExecResult(0, wake.encode(), b"", False, 5, False, MAX_STDOUT_BYTES + 1, 0)
    assert judge_exec(big) == PrecheckResult("error", "stdout larger than 1 MB")
    assert judge_exec(out(b'\xff\xfe\n{"wakeAgent": false}')).decision == "skip"  # bad UTF-8 before


def test_the_woken_prompt_carries_the_script_data() -> None:
    assert precheck_prompt("Summarise", {"prs": 2}) == wrap_scheduled_prompt("Summarise", {"prs": 2})
    assert precheck_prompt("Summarise", {"prs": 2}).startswith("[SCHEDULED TASK]\n\nScript output:\n{")
    assert precheck_prompt("p", None) == "[SCHEDULED TASK]\n\nScript output:\n{}\n\nInstructions:\np"
    assert precheck_prompt("p", [1]) == "[SCHEDULED TASK]\n\nScript output:\n[\n  1\n]\n\nInstructions:\np"


# --- running it through the sandbox ---------------------------------------------------------------


class CannedSandbox:
    """Answers every exec with ``result`` (or raises ``error``); records the calls."""

    def __init__(self, result: ExecResult | None = None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.calls: list[dict[str, Any]] = []

    def exec(self, group, argv, *, timeout=None, tool=None, is_main=None):  # type: ignore[no-untyped-def]
        self.calls.append(
            {"group": group, "argv": list(argv), "timeout": timeout, "tool": tool, "is_main": is_main}
        )
        if self.error is not None:
            raise self.error
        return self.result


def test_the_script_goes_to_the_group_container_as_an_argument_never_through_a_host_shell() -> None:
    sandbox = CannedSandbox(out('{"wakeAgent": false}'))
    script = "echo '{\"wakeAgent\": false}'  # $(rm -rf /) stays text"
    assert run_precheck(sandbox, "team", True, script).decision == "skip"
    (call,) = sandbox.calls
    assert (call["group"], call["is_main"], call["tool"]) == ("team", True, PRECHECK_TOOL)
    assert call["timeout"] == PRECHECK_TIMEOUT_S == 30
    argv = call["argv"]
    assert argv[:2] == ["sh", "-c"] and argv[-1] == script
    assert "mktemp /tmp/" in argv[2] and 'bash "$f"' in argv[2] and 'sh "$f"' in argv[2]


def test_sandbox_faults_propagate() -> None:
    with pytest.raises(TransientSandboxError):
        run_precheck(CannedSandbox(error=TransientSandboxError("no answer")), "g", False, "true")


# --- the agent ------------------------------------------------------------------------------------


TASK = AgentRequest(
    "fake:g",
    "g",
    False,
    wrap_scheduled_prompt("Check PRs"),
    is_scheduled_task=True,
    run_id=7,
    script="gh pr list",
    task_prompt="Check PRs",
)


def agent(engine, tmp_path: Path, sandbox: CannedSandbox | None, provider: Recording) -> Agent:
    return build_agent(
        AgentSettings(),
        provider,
        assistant_name="Andy",
        engine=engine,
        groups_dir=tmp_path / "groups",
        archive_dir=tmp_path / "conversations",
        timezone="UTC",
        sandbox=sandbox,  # type: ignore[arg-type]
    )


def prechecks(engine) -> list[tuple[str | None, dict[str, Any]]]:
    with read_tx(engine) as conn:
        return [(r["decision"], r["detail"]) for r in audit.recent(conn, kind="scheduler.precheck")]


def test_a_script_that_keeps_the_agent_asleep_means_no_model_call_and_no_text(engine, tmp_path) -> None:
    provider = Recording()
    result = agent(engine, tmp_path, CannedSandbox(out('{"wakeAgent": false}')), provider).run(TASK)
    assert (result.text, result.steps, result.woken) == (None, 0, False)
    assert provider.calls == []
    assert prechecks(engine) == [("skip", {"group": "g", "run_id": 7, "reason": "wakeAgent false"})]


def test_a_broken_script_is_audited_as_an_error_and_keeps_the_agent_asleep(engine, tmp_path) -> None:
    provider = Recording()
    result = agent(engine, tmp_path, CannedSandbox(out("secret-output\n", 2)), provider).run(TASK)
    assert (result.text, provider.calls) == (None, [])
    assert prechecks(engine) == [("error", {"group": "g", "run_id": 7, "reason": "exit code 2"})]
    assert "secret-output" not in str(prechecks(engine))


def test_a_woken_agent_gets_the_task_prompt_wrapped_with_the_script_data(engine, tmp_path) -> None:
    provider = Recording(Completion("2 PRs need review"))
    sandbox = CannedSandbox(out('{"wakeAgent": true, "data": {"prs": 2}}'))
    result = agent(engine, tmp_path, sandbox, provider).run(TASK)
    assert result.text == "2 PRs need review" and result.woken
    (_system, turns) = provider.calls[0]
    assert turns[-1].content == wrap_scheduled_prompt("Check PRs", {"prs": 2})
    assert prechecks(engine)[0][0] == "wake"


def test_without_a_sandbox_the_script_never_runs_and_the_run_fails(engine, tmp_path) -> None:
    provider = Recording()
    with pytest.raises(SandboxUnavailable):
        agent(engine, tmp_path, None, provider).run(TASK)
    assert provider.calls == []
    assert prechecks(engine) == [
        ("error", {"group": "g", "run_id": 7, "reason": "no sandbox: the script was not run"})
    ]
    with pytest.raises(SandboxUnavailable):  # a bare agent (the offline providers) has no hook
        Agent(provider, assistant_name="Andy").run(TASK)


def test_a_sandbox_fault_fails_the_run_and_is_audited(engine, tmp_path) -> None:
    provider = Recording()
    sandbox = CannedSandbox(error=SandboxUnavailable("docker is down", group="g"))
    with pytest.raises(SandboxUnavailable):
        agent(engine, tmp_path, sandbox, provider).run(TASK)
    assert prechecks(engine) == [
        ("error", {"group": "g", "run_id": 7, "reason": "sandbox: SandboxUnavailable"})
    ]


def test_only_scheduled_tasks_run_a_script_and_no_script_means_no_sandbox_call(engine, tmp_path) -> None:
    sandbox = CannedSandbox(out('{"wakeAgent": false}'))
    provider = Recording(Completion("a"), Completion("b"))
    a = agent(engine, tmp_path, sandbox, provider)
    a.run(AgentRequest("fake:g", "g", False, "hi", script="exit 1"))  # a message run ignores it
    a.run(AgentRequest("fake:g", "g", False, "task", is_scheduled_task=True))
    assert sandbox.calls == [] and len(provider.calls) == 2 and prechecks(engine) == []
