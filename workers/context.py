"""Per-process context for Celery tasks: the app engine, the connectors' send clients, an event
loop runner, and the router's and outbound worker's dependencies, built lazily once per
process (again after fork) by the composition root (`microclaw.runtime.wiring`).

`workers.app` binds the settings, the app and its publisher once at import; tasks are entry
points, so they may ask for `context()`; library code never does.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from functools import cached_property

from celery import Celery
from sqlalchemy import Engine

from microclaw.config import Settings
from microclaw.connectors.base import BaseConnector
from microclaw.pipeline.delivery import DeliveryDeps
from microclaw.pipeline.router import RouterDeps
from microclaw.runtime import wiring
from microclaw.runtime.celery_app import Publisher


@dataclass
class ProcessContext:
    settings: Settings
    app: Celery
    publish: Publisher
    pid: int = field(default_factory=os.getpid)

    @cached_property
    def engine(self) -> Engine:
        return wiring.app_engine(self.settings)

    @cached_property
    def connectors(self) -> list[BaseConnector]:
        boots = wiring.build_connectors(self.settings, quiet=True)
        return [b.connector for b in boots if b.connector is not None]

    @cached_property
    def runner(self) -> asyncio.Runner:
        return asyncio.Runner()

    @cached_property
    def router_deps(self) -> RouterDeps:
        agent = wiring.build_agent_fn(
            self.settings,
            self.engine,
            app=self.app,
            publish_deliver=self.publish.deliver,
        )
        return wiring.build_router_deps(
            self.settings,
            self.engine,
            agent,
            publish_deliver=self.publish.deliver,
            publish_typing=self.publish.typing,
        )

    @cached_property
    def delivery_deps(self) -> DeliveryDeps:
        return wiring.build_delivery_deps(self.settings, self.engine, self.connectors, self.runner)


_bound: tuple[Settings, Celery, Publisher] | None = None
_context: ProcessContext | None = None


def bind(settings: Settings, app: Celery, publish: Publisher) -> None:
    """Set what every context of this process is built from (called once by `workers.app`)."""
    global _bound
    _bound = (settings, app, publish)
    reset()


def context() -> ProcessContext:
    """This process's context (rebuilt after a fork)."""
    global _context
    if _bound is None:
        raise RuntimeError("workers.context is unbound: import workers.app first")
    if _context is None or _context.pid != os.getpid():
        _context = ProcessContext(*_bound)
    return _context


def reset() -> None:
    global _context
    _context = None


def warm_up() -> None:
    """Build this process's context now (engine, provider, send clients) so the first task does
    not pay for it: that cost showed up as 100-400 ms on the first message per child."""
    ctx = context()
    with ctx.engine.connect():
        pass
    _ = ctx.router_deps
    _ = ctx.delivery_deps
