"""Assembling an `Agent` from its parts: provider, tools, memory and limits.

`build_agent` takes the ``[agent]`` settings slice and the process's dependencies (the app
engine, a sandbox client, how to wake the outbound worker) and returns the callable the router
runs. Entry points (`workers.context`, benchmarks, tests) call it; it reads no settings or
environment itself.

A scheduled task's pre-check script (contract §4.6) runs through the same sandbox client, in
the group's container, and every outcome is audited as ``scheduler.precheck`` (decision
``wake``, ``skip`` or ``error`` with a short reason, never the script's output). Without a
sandbox client such a run fails (`SandboxUnavailable`); the script never runs on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from microclaw.agent.loop import Agent, AgentLimits, AgentRequest
from microclaw.agent.memory import AgentMemory
from microclaw.agent.precheck import PrecheckResult, run_precheck
from microclaw.agent.providers.base import BaseProvider
from microclaw.agent.tools.base import BaseTool, Toolbox
from microclaw.agent.tools.host import HostEnv, host_tools
from microclaw.agent.tools.sandbox import SandboxCalls, sandbox_tools
from microclaw.config import AgentSettings
from microclaw.errors import MicroClawError, SandboxUnavailable
from microclaw.store import audit


def limits_from(settings: AgentSettings) -> AgentLimits:
    return AgentLimits(
        max_steps=settings.max_steps,
        run_timeout_s=settings.run_timeout_s,
        daily_token_budget=settings.daily_token_budget,
        input_cost_per_mtok=settings.input_cost_per_mtok,
        output_cost_per_mtok=settings.output_cost_per_mtok,
    )


def build_agent(
    settings: AgentSettings,
    provider: BaseProvider,
    *,
    assistant_name: str,
    engine: Engine,
    groups_dir: Path,
    timezone: str,
    sandbox: SandboxCalls | None,
    publish_deliver: Callable[[str], object] | None = None,
    lease_ttl_ms: int = 60_000,
) -> Agent:
    """The agent for one worker process: host tools always, sandbox tools when a client is given."""
    env = HostEnv(
        engine,
        timezone=timezone,
        groups_dir=groups_dir,
        lease_ttl_ms=lease_ttl_ms,
        publish_deliver=publish_deliver,
    )
    tools: list[BaseTool] = [*(sandbox_tools(sandbox) if sandbox is not None else []), *host_tools(env)]

    def record(kind: str, **fields: object) -> None:
        audit.record_now(engine, kind, **fields)

    def precheck(request: AgentRequest) -> PrecheckResult:
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

    return Agent(
        provider,
        assistant_name=assistant_name,
        toolbox=Toolbox(tools, audit=record, max_output_chars=settings.max_tool_output_chars),
        memory=AgentMemory(
            engine,
            groups_dir,
            history_token_budget=settings.history_token_budget,
            keep_recent_turns=settings.keep_recent_turns,
        ),
        limits=limits_from(settings),
        precheck=precheck,
    )
