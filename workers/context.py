"""Per-process context for Celery tasks: settings, the app engine, the agent provider, the
connectors' send clients and an event loop runner, built lazily once per process (after fork).

Tasks are entry points, so they may ask for it; library code never does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine

from microclaw.agent.loop import AgentRequest, AgentResult, run_agent
from microclaw.agent.providers import load_provider
from microclaw.agent.runtime import build_agent
from microclaw.config import Settings, load_settings
from microclaw.connectors.base import BaseConnector
from microclaw.pipeline.delivery import DeliveryDeps
from microclaw.pipeline.router import AgentFn, RouterDeps
from microclaw.runtime.wiring import (
    app_engine,
    build_connectors,
    router_config,
    sender_allowlist_loader,
    worker_name,
)
from microclaw.sandbox.client import SandboxClient

# Providers that never call tools: no sandbox, sessions or spend records for them.
OFFLINE_PROVIDERS = frozenset({"", "none", "scripted"})


@dataclass
class ProcessContext:
    settings: Settings
    pid: int = field(default_factory=os.getpid)

    @cached_property
    def engine(self) -> Engine:
        return app_engine(self.settings)

    @cached_property
    def connectors(self) -> list[BaseConnector]:
        return [b.connector for b in build_connectors(self.settings, quiet=True) if b.connector is not None]

    @cached_property
    def runner(self) -> asyncio.Runner:
        return asyncio.Runner()

    @cached_property
    def router_deps(self) -> RouterDeps:
        from microclaw.runtime.celery_app import publish_deliver, publish_typing

        config = router_config(self.settings)
        return RouterDeps(
            engine=self.engine,
            config=config,
            agent=self.agent(publish_deliver, config.lease_ttl_ms),
            publish_deliver=publish_deliver,
            worker=worker_name("router"),
            allowlist=sender_allowlist_loader(self.settings),
            publish_typing=publish_typing,
        )

    def agent(self, publish_deliver: Callable[[str], object], lease_ttl_ms: int) -> AgentFn:
        """The agent callable: a real provider gets tools (sandbox + host), sessions, memory files
        and spend control; the offline providers (scripted, none) answer in one plain step."""
        settings = self.settings
        provider = load_provider(settings.agent)
        if settings.agent.provider in OFFLINE_PROVIDERS:
            name = settings.assistant_name

            def offline(request: AgentRequest, on_step: Callable[[], list[str]]) -> AgentResult:
                return run_agent(provider, request, assistant_name=name, on_step=on_step)

            return offline
        from microclaw.runtime.celery_app import app

        return build_agent(
            settings.agent,
            provider,
            assistant_name=settings.assistant_name,
            engine=self.engine,
            groups_dir=settings.groups_dir,
            timezone=settings.timezone,
            sandbox=SandboxClient(app, settings.sandbox),
            publish_deliver=publish_deliver,
            lease_ttl_ms=lease_ttl_ms,
        )

    @cached_property
    def delivery_deps(self) -> DeliveryDeps:
        return DeliveryDeps(
            engine=self.engine,
            connectors=self.connectors,
            settings=self.settings.outbound,
            worker=worker_name("outbound"),
            runner=self.runner,
            lease_ttl_ms=int(self.settings.router.lease_ttl_s * 1000),
        )


_context: ProcessContext | None = None


def context() -> ProcessContext:
    """This process's context (rebuilt after a fork)."""
    global _context
    if _context is None or _context.pid != os.getpid():
        _context = ProcessContext(load_settings())
    return _context


def reset() -> None:
    global _context
    _context = None


def warm_up() -> None:
    """Build this process's context now (settings, engine, provider, send clients) so the first
    task does not pay for it: that cost showed up as 100-400 ms on the first message per child."""
    ctx = context()
    with ctx.engine.connect():
        pass
    _ = ctx.router_deps
    _ = ctx.delivery_deps
