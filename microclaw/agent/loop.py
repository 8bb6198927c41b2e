"""The agent loop: from a router prompt to the reply text, one model step at a time.

One run: the system prompt (assistant name, memory files), the group's session history (see
`microclaw.agent.memory`), the router's prompt; then model call -> tool calls executed through
the `Toolbox` -> results fed back, until the model answers without tools. Before every model
call ``on_step`` runs: the router renews/checks its lease there and returns the messages that
arrived for the group meanwhile, which join the conversation as user turns at that step
boundary. Limits: ``max_steps`` model calls and ``run_timeout_s`` of wall time (the run then
ends with what it has and says so); an optional daily token budget per group is checked before
each call and, when exhausted, the reply says so instead of calling the model.

Failures: provider errors propagate (the router rolls back and retries when nothing reached the
user); tool failures never do (the model sees them as tool errors); `LeaseLost` from ``on_step``
or a host tool propagates. Turns and spend are saved only when the run completes.

A scheduled task with a pre-check ``script`` (contract §4.6) runs it first through the agent's
``precheck`` hook (the sandbox, see `microclaw.agent.precheck.audited_precheck`): not woken
means no model call and a result with ``text`` None; woken means the task prompt is re-wrapped
with the script's data (§2.2). An agent without the hook (no sandbox) refuses such a run with
`SandboxUnavailable` rather than run the script anywhere else.

Does not send anything: the router turns the result into outbox rows (``send_message`` is the
tools' business).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from microclaw.agent.memory import AgentMemory, Session
from microclaw.agent.precheck import PrecheckResult, precheck_prompt
from microclaw.agent.providers.base import BaseProvider, ChatTurn, Usage
from microclaw.agent.tools.base import Toolbox, ToolContext
from microclaw.errors import SandboxUnavailable

logger = logging.getLogger(__name__)

# Called before each model call; returns new prompt blocks (follow-up messages) or None.
OnStep = Callable[[], Sequence[str] | None]
# Runs a scheduled task's pre-check script (request.script) where it is allowed to run.
Precheck = Callable[["AgentRequest"], PrecheckResult]

BUDGET_EXHAUSTED = (
    "I've reached today's usage limit for this chat, so I can't answer right now. "
    "The limit resets at midnight UTC (an admin can raise agent.daily_token_budget)."
)
STEP_LIMIT_NOTE = "(I stopped here: this request needed more steps than I'm allowed in one go.)"
TIME_LIMIT_NOTE = "(I stopped here: this request ran past my time limit.)"


@dataclass(frozen=True)
class AgentRequest:
    chat_jid: str
    group_folder: str
    is_main: bool
    prompt: str
    is_scheduled_task: bool = False
    run_id: int | None = None
    # A scheduled task's pre-check script (§4.6) and the task's own prompt, which is re-wrapped
    # with the script's data when it wakes the agent (``prompt`` is the plain wrapping).
    script: str | None = None
    task_prompt: str | None = None


@dataclass(frozen=True)
class AgentResult:
    text: str | None
    usage: Usage = field(default_factory=Usage)
    steps: int = 1
    cost: float = 0.0
    stopped: str | None = None  # "steps" | "time" | "budget" when a limit ended the run
    woken: bool = True  # False: a pre-check script kept the agent asleep (no model call)


@dataclass(frozen=True)
class AgentLimits:
    max_steps: int = 20
    run_timeout_s: float = 600.0
    daily_token_budget: int = 0  # 0: no limit
    input_cost_per_mtok: float = 0.0
    output_cost_per_mtok: float = 0.0

    def cost(self, spent: Usage) -> float:
        return (
            spent.input_tokens * self.input_cost_per_mtok + spent.output_tokens * self.output_cost_per_mtok
        ) / 1_000_000


def system_prompt(
    assistant_name: str, request: AgentRequest, memory: Sequence[tuple[str, str]] = (), *, tools: bool = False
) -> str:
    """The system prompt: who the assistant is, where it is talking, and its memory files."""
    parts = [
        f"You are {assistant_name}, a personal assistant in a chat. "
        "Messages arrive as XML; answer the latest ones helpfully and concisely. "
        "Wrap private reasoning in <internal>...</internal>; it is never sent."
    ]
    if request.is_scheduled_task:
        parts.append("This run is a scheduled task: your final answer is sent to the chat.")
    if tools:
        parts.append(
            "You have tools. Files and commands run in your sandboxed workspace /workspace/group "
            "(it persists between conversations); your memory file is CLAUDE.md there. "
            "Use send_message for progress updates during long work; your final answer is sent "
            "automatically."
        )
    for title, body in memory:
        parts.append(f"## {title}\n\n{body}")
    return "\n\n".join(parts)


class Agent:
    """Runs the loop for one worker process; thread-safe if its provider and toolbox are."""

    def __init__(
        self,
        provider: BaseProvider,
        *,
        assistant_name: str,
        toolbox: Toolbox | None = None,
        memory: AgentMemory | None = None,
        limits: AgentLimits | None = None,
        model: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        precheck: Precheck | None = None,
    ) -> None:
        self.provider = provider
        self.assistant_name = assistant_name
        self.toolbox = toolbox
        self.memory = memory
        self.limits = limits or AgentLimits()
        self.model = model or getattr(provider, "model", None)
        self.clock = clock
        self.precheck = precheck

    def __call__(self, request: AgentRequest, on_step: OnStep | None = None) -> AgentResult:
        return self.run(request, on_step)

    def run(self, request: AgentRequest, on_step: OnStep | None = None) -> AgentResult:
        """Run the conversation to a final answer (see the module docstring for the rules)."""
        if request.is_scheduled_task and request.script:
            if self.precheck is None:
                raise SandboxUnavailable(
                    "a task pre-check script runs only in the sandbox, and this agent has none",
                    group=request.group_folder,
                )
            outcome = self.precheck(request)
            if not outcome.wake:
                return AgentResult(text=None, steps=0, woken=False)
            task_prompt = request.task_prompt if request.task_prompt is not None else request.prompt
            request = replace(request, prompt=precheck_prompt(task_prompt, outcome.data))
        started = self.clock()
        limits = self.limits
        memory = self.memory
        session = (
            memory.open(
                request.chat_jid,
                request.group_folder,
                is_scheduled_task=request.is_scheduled_task,
                run_id=request.run_id,
            )
            if memory is not None
            else Session(None, [])
        )
        sections = memory.sections(request.chat_jid, request.group_folder, request.is_main) if memory else []
        system = system_prompt(self.assistant_name, request, sections, tools=self.toolbox is not None)
        schemas = self.toolbox.schemas() if self.toolbox is not None else []
        ctx = ToolContext(request.chat_jid, request.group_folder, request.is_main, request.run_id)
        new: list[ChatTurn] = [ChatTurn("user", request.prompt)]
        spent = Usage()
        spent_before = (
            memory.tokens_today(request.group_folder)
            if memory is not None and limits.daily_token_budget
            else 0
        )
        text: str | None = None
        stopped: str | None = None
        steps = 0
        try:
            while True:
                if on_step is not None:
                    new.extend(ChatTurn("user", block) for block in on_step() or ())
                if steps >= limits.max_steps:
                    stopped, text = "steps", _with_note(text, STEP_LIMIT_NOTE)
                    break
                if steps and self.clock() - started >= limits.run_timeout_s:
                    stopped, text = "time", _with_note(text, TIME_LIMIT_NOTE)
                    break
                if limits.daily_token_budget and spent_before + spent.total >= limits.daily_token_budget:
                    stopped, text = "budget", BUDGET_EXHAUSTED
                    logger.warning("daily token budget exhausted", extra={"chat_jid": request.chat_jid})
                    break
                completion = self.provider.complete(system, session.history + new, schemas)
                steps += 1
                spent = spent + completion.usage
                new.append(ChatTurn("assistant", completion.text or "", tool_calls=completion.tool_calls))
                text = completion.text
                if not completion.tool_calls:
                    break
                for call in completion.tool_calls:
                    if self.toolbox is None:
                        result_text, is_error = "tools are not available in this run", True
                    else:
                        result = self.toolbox.execute(ctx, call)
                        result_text, is_error = result.content, result.is_error
                    new.append(ChatTurn("tool", result_text, tool_call_id=call.id, is_error=is_error))
        except BaseException:
            if memory is not None and spent.total:  # tokens spent on a failed run still count
                self._record(memory, request, Session(None, []), [], steps, spent)
            raise
        if stopped == "budget":
            new.append(ChatTurn("assistant", text or ""))
        if memory is not None:
            self._record(memory, request, session, new, steps, spent)
            extra = memory.compact_if_needed(self.provider, request.chat_jid, request.group_folder, session)
            if extra.total:  # the compaction's own model call
                self._record(memory, request, Session(None, []), [], 1, extra)
                spent = spent + extra
        return AgentResult(text=text, usage=spent, steps=steps, cost=limits.cost(spent), stopped=stopped)

    def _record(
        self,
        memory: AgentMemory,
        request: AgentRequest,
        session: Session,
        turns: list[ChatTurn],
        steps: int,
        spent: Usage,
    ) -> None:
        """Append ``turns`` to ``session`` (if any) and record ``spent`` for this run."""
        memory.finish(
            session,
            turns,
            run_id=request.run_id,
            chat_jid=request.chat_jid,
            folder=request.group_folder,
            model=self.model,
            steps=steps,
            spent=spent,
            cost=self.limits.cost(spent),
        )


def _with_note(text: str | None, note: str) -> str:
    return f"{text.rstrip()}\n\n{note}" if text and text.strip() else note


def run_agent(
    provider: BaseProvider,
    request: AgentRequest,
    *,
    assistant_name: str,
    on_step: OnStep | None = None,
) -> AgentResult:
    """A run with no tools, memory or limits beyond the defaults (smoke runs and tests)."""
    return Agent(provider, assistant_name=assistant_name).run(request, on_step)
