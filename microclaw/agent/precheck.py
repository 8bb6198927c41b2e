"""A scheduled task's pre-check script (contract §4.6): run it in the group's sandbox, decide
whether the agent wakes.

`run_precheck` writes the script to a temp file inside the group's container (``mktemp`` under
the container's tmpfs ``/tmp``) and runs it with ``bash`` when the image has it, else ``sh``:
30 s timeout, stdout capped at 1 MB. The script travels as an argv item, never through a host
shell, and nothing runs on the host. `parse_precheck_output` is the pure rule: the last
non-empty stdout line must be a JSON object with a boolean ``wakeAgent`` (``data`` optional).

Outcomes: ``wake`` (the agent runs with `precheck_prompt`), ``skip`` (``wakeAgent`` false) and
``error`` (the script failed, timed out, printed too much, nothing, or no valid decision). Skip
and error both mean "do not call the agent; the run succeeded with no result", as in NanoClaw.
Sandbox faults (`SandboxError`, including `SandboxUnavailable`, and `PolicyDenied`) are not
script outcomes: they propagate, so the router logs the task run as an error.

`audited_precheck` is the agent's ``precheck`` hook: it runs the script through the sandbox
client and audits every outcome as ``scheduler.precheck`` (decision ``wake``, ``skip`` or
``error`` with a short reason, never the script's output). Without a sandbox client such a run
fails (`SandboxUnavailable`); the script never runs on the host.

Does not decide what the agent loop does with the outcome (`microclaw.agent.loop` does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from microclaw.core.formatting import wrap_scheduled_prompt
from microclaw.errors import MicroClawError, SandboxUnavailable
from microclaw.sandbox.base import ExecResult

PRECHECK_TIMEOUT_S = 30.0
MAX_STDOUT_BYTES = 1024 * 1024  # NanoClaw's execFile maxBuffer
PRECHECK_TOOL = "task_precheck"  # the sandbox audits the exec under this tool name

# $1 is the script. Written to a private temp file (mode 0755), run, removed; exit code kept.
_RUNNER = (
    "f=$(mktemp /tmp/task-script.XXXXXX) || exit 125\n"
    'printf "%s" "$1" > "$f" && chmod 755 "$f" || { rm -f "$f"; exit 125; }\n'
    'if command -v bash >/dev/null 2>&1; then bash "$f"; else sh "$f"; fi\n'
    "rc=$?\n"
    'rm -f "$f"\n'
    'exit "$rc"\n'
)

Decision = Literal["wake", "skip", "error"]


@dataclass(frozen=True)
class PrecheckResult:
    decision: Decision
    reason: str  # short, never the script's output
    data: Any = None  # the script's ``data`` when it woke the agent

    @property
    def wake(self) -> bool:
        return self.decision == "wake"


class PrecheckSandbox(Protocol):
    """The part of `microclaw.sandbox.client.SandboxClient` the pre-check uses."""

    def exec(
        self,
        group: str,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        tool: str | None = None,
        is_main: bool | None = None,
    ) -> ExecResult: ...


def parse_precheck_output(stdout: str) -> PrecheckResult:
    """The decision in a script's stdout: its last non-empty line, as JSON with a boolean
    ``wakeAgent`` and optional ``data``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        return PrecheckResult("error", "no output")
    try:
        decoded = json.loads(lines[-1])
    except ValueError:
        return PrecheckResult("error", "last output line is not JSON")
    if not isinstance(decoded, dict) or not isinstance(decoded.get("wakeAgent"), bool):
        return PrecheckResult("error", "no boolean wakeAgent in the last output line")
    if not decoded["wakeAgent"]:
        return PrecheckResult("skip", "wakeAgent false")
    return PrecheckResult("wake", "wakeAgent true", decoded.get("data"))


def judge_exec(result: ExecResult) -> PrecheckResult:
    """The outcome of one script run (exit status, timeout, output cap, then its decision)."""
    if result.timed_out:
        return PrecheckResult("error", f"timed out after {PRECHECK_TIMEOUT_S:.0f} s")
    if result.truncated or result.stdout_bytes > MAX_STDOUT_BYTES or len(result.stdout) > MAX_STDOUT_BYTES:
        return PrecheckResult("error", "stdout larger than 1 MB")
    if result.exit_code != 0:
        return PrecheckResult("error", f"exit code {result.exit_code}")
    return parse_precheck_output(result.stdout_text)


def run_precheck(sandbox: PrecheckSandbox, group: str, is_main: bool, script: str) -> PrecheckResult:
    """Run ``script`` in ``group``'s container and judge it; sandbox faults propagate."""
    argv = ["sh", "-c", _RUNNER, "task-precheck", script]
    result = sandbox.exec(group, argv, timeout=PRECHECK_TIMEOUT_S, tool=PRECHECK_TOOL, is_main=is_main)
    return judge_exec(result)


def precheck_prompt(task_prompt: str, data: Any) -> str:
    """The woken agent's prompt (§2.2). A script that sent no ``data`` shows ``{}``."""
    return wrap_scheduled_prompt(task_prompt, cast(Mapping[str, Any], {} if data is None else data))


class PrecheckRequest(Protocol):
    """What the hook reads of a run's request (`microclaw.agent.loop.AgentRequest`)."""

    @property
    def chat_jid(self) -> str: ...
    @property
    def group_folder(self) -> str: ...
    @property
    def is_main(self) -> bool: ...
    @property
    def run_id(self) -> int | None: ...
    @property
    def script(self) -> str | None: ...


def audited_precheck(
    sandbox: PrecheckSandbox | None, record: Callable[..., None]
) -> Callable[[PrecheckRequest], PrecheckResult]:
    """The agent's ``precheck`` hook: run the request's script in the sandbox, audit the outcome.

    ``record(kind, **fields)`` writes one audit row. A sandbox fault is audited as ``error`` and
    re-raised (the run fails); with no sandbox the script is never run and the run fails.
    """

    def precheck(request: PrecheckRequest) -> PrecheckResult:
        def note(decision: str, reason: str) -> None:
            record(
                "scheduler.precheck",
                chat_jid=request.chat_jid,
                decision=decision,
                group=request.group_folder,
                run_id=request.run_id,
                reason=reason,
            )

        if sandbox is None:
            note("error", "no sandbox: the script was not run")
            raise SandboxUnavailable(
                "a task pre-check script runs only in the sandbox", group=request.group_folder
            )
        try:
            outcome = run_precheck(sandbox, request.group_folder, request.is_main, request.script or "")
        except MicroClawError as exc:  # a sandbox fault, not the script's: the run fails
            note("error", f"sandbox: {type(exc).__name__}")
            raise
        note(outcome.decision, outcome.reason)
        return outcome

    return precheck
