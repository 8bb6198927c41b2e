"""Per-process context for Celery tasks: the app engine, the connectors' send clients, an event
loop runner, and the router's and outbound worker's dependencies, built lazily by the
composition root (`microclaw.runtime.wiring`).

Workers run Celery's threads pool, so one context serves many task threads at once:
- shared by every thread, built once under a lock: the engine (SQLAlchemy's pool is
  thread-safe) and the router's dependencies (provider clients are thread-safe, the agent
  keeps no per-call state);
- one per thread: the ``asyncio.Runner`` (an event loop belongs to one thread) and what is bound
  to its loop, the connectors' async send clients and the outbound dependencies built on them.
A forked child (a prefork pool, if a scale-out install asks for one) gets a fresh context.

`workers.app` binds the settings, the app and its publisher once at import; tasks are entry
points, so they may ask for `context()`; library code never does.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from celery import Celery

from microclaw.config import Settings
from microclaw.runtime.celery_app import Publisher

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from microclaw.connectors.base import BaseConnector
    from microclaw.pipeline.delivery import DeliveryDeps
    from microclaw.pipeline.router import RouterDeps

T = TypeVar("T")


@dataclass
class ProcessContext:
    settings: Settings
    app: Celery
    publish: Publisher
    process: str = "worker"  # this process's name in lease holders (``worker@host:pid#...``)
    pid: int = field(default_factory=os.getpid)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def _once(self, key: str, build: Any) -> Any:
        try:
            return self._shared[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self._shared:
                self._shared[key] = build()
            return self._shared[key]

    def _per_thread(self, key: str, build: Any) -> Any:
        value = getattr(self._local, key, None)
        if value is None:
            value = build()
            setattr(self._local, key, value)
        return value

    @property
    def engine(self) -> Engine:
        from microclaw.runtime import wiring

        return self._once("engine", lambda: wiring.app_engine(self.settings))

    @property
    def run_slots(self) -> threading.BoundedSemaphore:
        """The global run cap (``router.concurrency``): the pool also has threads for deliveries
        and upkeep, so a kick takes a slot before it drains a group, or declines."""
        return self._once("run_slots", lambda: threading.BoundedSemaphore(self.settings.router.concurrency))

    @property
    def router_deps(self) -> RouterDeps:
        return self._once("router_deps", self._build_router_deps)

    def _build_router_deps(self) -> RouterDeps:
        from microclaw.runtime import wiring

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
            publish_sandbox_ensure=self.publish.sandbox_ensure,
            process=self.process,
        )

    @property
    def runner(self) -> asyncio.Runner:
        """This thread's event loop runner."""
        return self._per_thread("runner", asyncio.Runner)

    @property
    def connectors(self) -> list[BaseConnector]:
        """This thread's send clients (async clients are bound to this thread's loop)."""
        from microclaw.runtime import wiring

        def build() -> list[BaseConnector]:
            boots = wiring.build_connectors(self.settings, quiet=True)
            return [b.connector for b in boots if b.connector is not None]

        return self._per_thread("connectors", build)

    @property
    def delivery_deps(self) -> DeliveryDeps:
        from microclaw.runtime import wiring

        return self._per_thread(
            "delivery_deps",
            lambda: wiring.build_delivery_deps(
                self.settings, self.engine, self.connectors, self.runner, process=self.process
            ),
        )


_bound: tuple[Settings, Celery, Publisher, str] | None = None
_context: ProcessContext | None = None
_context_lock = threading.Lock()


def bind(settings: Settings, app: Celery, publish: Publisher, *, process: str = "worker") -> None:
    """Set what every context of this process is built from (called once by `workers.app`)."""
    global _bound
    _bound = (settings, app, publish, process)
    reset()


def context() -> ProcessContext:
    """This process's context (rebuilt after a fork)."""
    global _context
    if _bound is None:
        raise RuntimeError("workers.context is unbound: import workers.app first")
    ctx = _context
    if ctx is None or ctx.pid != os.getpid():
        with _context_lock:
            if _context is None or _context.pid != os.getpid():
                _context = ProcessContext(*_bound)
            ctx = _context
    return ctx


def reset() -> None:
    global _context
    _context = None


def warm_up(*, router: bool = True, outbound: bool = True) -> None:
    """Build the shared part of this process's context now (engine, provider) so the first task
    does not pay for it: that cost showed up as 100-400 ms on the first message. Per-thread
    parts (runner, send clients) are built by each thread on first use."""
    ctx = context()
    with ctx.engine.connect():
        pass
    if router:
        _ = ctx.router_deps
    if outbound:
        from microclaw.runtime import wiring

        wiring.build_connectors(ctx.settings, quiet=True)  # imports the connectors' modules
