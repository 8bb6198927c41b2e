"""Agent benchmark: orchestration overhead per tool step, instant fake model, warm sandbox.

Starts a sandbox worker (the Procfile's command line, Docker test image) on the SQLite broker,
then runs the real router in this process (lease, cursors, outbox) with the real agent loop,
toolbox, sessions and usage records, and the real `SandboxClient`. The model answers
instantly: every step asks for ``run_command "true"`` until the last, which answers.

Reported per tool step (median over runs):
- total: wall time of one step (model call + tool call + loop bookkeeping);
- sandbox: the `SandboxClient` round trip (broker -> sandbox worker -> container -> result);
- orchestration: total minus the model and the sandbox round trip (lease check and follow-up
  query, toolbox, argument checks; the per-run session/usage writes are amortized over steps).
Variants: an in-process instant provider, and the real ``anthropic`` SDK against the fake
Anthropic server on 127.0.0.1 (adds HTTP + SDK cost to "model").

Run: ``.venv/bin/python bench/agent.py [--runs 20 --steps 10]``. Target: orchestration
<= 25 ms per step. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar, Self

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from microclaw.agent.providers.anthropic import AnthropicProvider
from microclaw.agent.providers.base import BaseProvider, ChatTurn, Completion, ToolCall, Usage
from microclaw.config import AgentSettings
from microclaw.pipeline.inbound import ingest
from microclaw.pipeline.router import process_group
from microclaw.runtime.wiring import build_agent
from microclaw.sandbox.client import SandboxClient
from tests.helpers import envelope, register, router_deps
from tests.integration.agent.fakes import Call, FakeAnthropic, Step
from tests.integration.sandbox.test_celery_tasks import start_sandbox_worker
from tests.integration.stack import Stack


class InstantProvider(BaseProvider):
    """Asks for ``run_command "true"`` until ``steps`` tool calls were made in the conversation."""

    name: ClassVar[str] = "instant"

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.seconds = 0.0

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> Self:
        return cls(10)

    def complete(self, system: str, turns: list[ChatTurn], tools: list[dict[str, Any]]) -> Completion:
        started = time.perf_counter()
        if _answered(turns, self.steps):
            result = Completion("done", (), Usage(5, 5))
        else:
            call = ToolCall(uuid.uuid4().hex[:8], "run_command", {"command": "true"})
            result = Completion(None, (call,), Usage(5, 5))
        self.seconds += time.perf_counter() - started
        return result


def _answered(turns: list[ChatTurn], steps: int) -> bool:
    """True once this run (since its last user prompt) has made ``steps`` tool calls."""
    last_user = max(i for i, t in enumerate(turns) if t.role == "user" and not t.tool_call_id)
    return sum(1 for t in turns[last_user:] if t.role == "tool") >= steps


class TimedSandbox:
    def __init__(self, client: SandboxClient) -> None:
        self.client = client
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


def measure(stack: Stack, provider: Any, model_timer: Any, runs: int, steps: int, label: str) -> float:
    sandbox = TimedSandbox(SandboxClient(stack.app, stack.settings.sandbox))
    folder = f"bench_{label}"
    chat = f"bench:{label}"
    register(stack.engine, chat, folder=folder, is_main=True)
    agent = build_agent(
        AgentSettings(max_steps=steps + 2, history_token_budget=10_000_000),
        provider,
        assistant_name="Andy",
        engine=stack.engine,
        groups_dir=stack.settings.groups_dir,
        archive_dir=stack.settings.data_dir / "conversations",
        timezone="UTC",
        sandbox=sandbox,
    )
    deps = router_deps(stack.engine, stack.root, agent=agent)
    # Warm up: starts the group's container and fills caches.
    ingest(stack.engine, envelope(chat, "warm up"))
    process_group(deps, chat)
    totals, sandboxes, models, orchestration = [], [], [], []
    for i in range(runs):
        ingest(stack.engine, envelope(chat, f"run {i}"))
        sandbox.seconds = 0.0
        model_before = model_timer()
        started = time.perf_counter()
        process_group(deps, chat)
        total = time.perf_counter() - started
        model = model_timer() - model_before
        totals.append(total / steps * 1000)
        sandboxes.append(sandbox.seconds / steps * 1000)
        models.append(model / steps * 1000)
        orchestration.append((total - sandbox.seconds - model) / steps * 1000)
    med = statistics.median
    p90 = sorted(orchestration)[int(0.9 * (len(orchestration) - 1))]
    print(
        f"[{label}] per tool step over {runs} runs x {steps} steps: total {med(totals):.1f} ms, "
        f"model {med(models):.1f} ms, sandbox round trip {med(sandboxes):.1f} ms, "
        f"orchestration {med(orchestration):.1f} ms (p90 {p90:.1f})"
    )
    return med(orchestration)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="microclaw-sandbox-test:latest")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mcb-", dir="/tmp"))
    instance = f"bench-{uuid.uuid4().hex[:8]}"
    stack = Stack(
        root,
        MICROCLAW_SANDBOX__IMAGE=args.image,
        MICROCLAW_SANDBOX__INSTANCE=instance,
        MICROCLAW_SANDBOX__RUN_DIR=str(root / "run"),
        MICROCLAW_LOGGING__LEVEL="WARNING",
    )
    results: dict[str, float] = {}
    try:
        start_sandbox_worker(stack, "sandbox", "ready")
        instant = InstantProvider(args.steps)
        results["instant"] = measure(
            stack, instant, lambda: instant.seconds, args.runs, args.steps, "instant"
        )
        with FakeAnthropic() as server:
            model_seconds = [0.0]

            def responder(body: dict[str, Any]) -> Step:
                messages = body["messages"]
                last_user = max(
                    i
                    for i, m in enumerate(messages)
                    if m["role"] == "user" and any(b.get("type") == "text" for b in m["content"])
                )
                done = sum(
                    1
                    for m in messages[last_user:]
                    for b in (m["content"] if isinstance(m["content"], list) else [])
                    if b.get("type") == "tool_result"
                )
                if done >= args.steps:
                    return Step(text="done")
                return Step(calls=[Call("run_command", {"command": "true"})])

            server.responder = responder
            sdk = AnthropicProvider(api_key="bench", base_url=server.base_url, max_retries=0)
            original = sdk.complete

            def timed_complete(*a: Any, **k: Any) -> Completion:
                started = time.perf_counter()
                try:
                    return original(*a, **k)
                finally:
                    model_seconds[0] += time.perf_counter() - started

            sdk.complete = timed_complete  # type: ignore[method-assign]
            results["sdk"] = measure(
                stack, sdk, lambda: model_seconds[0], args.runs, args.steps, "anthropic-sdk"
            )
        verdict = "OK" if results["instant"] <= 25 else "MISSED"
        print(
            f"orchestration overhead per tool step {results['instant']:.1f} ms (target <= 25 ms: {verdict})"
        )
    finally:
        stack.stop()
        import docker

        client = docker.DockerClient(base_url=stack.settings.sandbox.docker_url)
        for container in client.containers.list(
            all=True, filters={"label": f"microclaw.instance={instance}"}
        ):
            container.remove(force=True)
        client.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
