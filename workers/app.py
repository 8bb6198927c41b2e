"""The worker and beat processes' Celery app (``microclaw-worker [beat]``, or ``celery -A
workers.app worker|beat``).

Importing this module loads and validates the settings once (an invalid setting stops the
process with a message naming the key), builds the app and connects Celery's process hooks:
logging, migrating the schema at start, warming up the roles this worker serves, rebuilding
per-process state after fork (only a scale-out install that asks for ``-P prefork`` forks),
heartbeats, booting / shutting down the sandbox role (with threads of its own when the worker
serves the router too), freezing start-up's objects for the garbage collector
(`microclaw.runtime.heap`), and the ``--embed-beat`` worker option (beat as a thread, see
`EmbeddedBeat`). Task modules (``tasks/``) decorate their functions with `app` and publish
through `publish`.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import click
from celery import bootsteps, signals

from microclaw.broker.transport import dispose_engines
from microclaw.config import load_settings
from microclaw.logs import configure_logging, process_name, process_role
from microclaw.runtime import heap, queues
from microclaw.runtime.celery_app import SANDBOX_THREADS, Publisher, create_app
from microclaw.runtime.wiring import bootstrap_database
from workers import context, heartbeat, sandbox
from workers.beat import BeatThread

logger = logging.getLogger(__name__)
settings = load_settings()
app = create_app(settings, set_as_current=True)
publish = Publisher(app)
# This process's name in heartbeats and lease holders (``worker``, ``sandbox``, ``beat``).
PROCESS = process_name(sys.argv)
context.bind(settings, app, publish, process=PROCESS)


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # Our settings decide the level and format; Celery's `-l` (loglevel here) is not used.
    configure_logging(
        settings.logging.level,
        settings.logging.format,
        role=process_role(sys.argv),
        levels=settings.logging.levels,
    )


@signals.worker_init.connect
def _worker_init(sender: Any = None, **_: Any) -> None:
    # Any process may be the first to start: each brings the schema up to date (serialized by
    # SQLite's write lock; a no-op when already current). A failure stops the worker.
    bootstrap_database(settings)
    # The default worker serves the sandbox queue too: its tool commands get threads of their
    # own, beyond the router's runs and the deliveries (unless -c set the pool size).
    if (
        sender is not None
        and _consumes(sender, queues.SANDBOX)
        and _consumes(sender, queues.ROUTER)
        and sender.concurrency == app.conf.worker_concurrency
    ):
        sender.concurrency += SANDBOX_THREADS


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Prefork only: engines and connections cached before fork must not be shared with the parent.
    dispose_engines()
    context.reset()
    context.warm_up()


def _warm_up(router: bool, outbound: bool) -> None:
    try:
        context.warm_up(router=router, outbound=outbound)
    except Exception:  # the first task builds it again and reports the error where it matters
        logger.warning("warm-up failed", exc_info=True)
    heap.freeze()  # what the warm-up built, too


@signals.worker_ready.connect
def _worker_ready(sender: Any = None, **_: Any) -> None:
    try:
        roles = sorted(q.removeprefix("microclaw.") for q in sender.app.amqp.queues.consume_from)
    except AttributeError:
        roles = []
    heartbeat.start_heartbeat(settings, process=PROCESS, roles=roles or ["worker"])
    heap.freeze()  # full collections would walk start-up's objects again and again


def _consumes(worker: Any, queue: str) -> bool:
    try:
        return queue in worker.app.amqp.queues.consume_from
    except AttributeError:
        return False


@signals.celeryd_after_setup.connect
def _sandbox_boot(sender: Any = None, instance: Any = None, **_: Any) -> None:
    # Before the consumer starts: the sandbox role removes the previous process's containers
    # and starts reporting readiness (refusing a forking pool, see workers/sandbox.py).
    if _consumes(instance, queues.SANDBOX):
        sandbox.boot_worker(settings, instance, process=PROCESS)
    router, outbound = _consumes(instance, queues.ROUTER), _consumes(instance, queues.OUTBOUND)
    if (router or outbound) and not _forks(instance):
        # Threads pool: build the provider and the send clients' modules while the consumer
        # connects, in parallel, rather than on the first message.
        threading.Thread(target=_warm_up, args=(router, outbound), name="warm-up", daemon=True).start()


def _forks(worker: Any) -> bool:
    from celery.concurrency.prefork import TaskPool as PreforkPool

    pool = getattr(worker, "pool_cls", None)
    return isinstance(pool, type) and issubclass(pool, PreforkPool)


@signals.worker_shutdown.connect
def _sandbox_shutdown(**_: Any) -> None:
    sandbox.shutdown_worker()


@signals.beat_init.connect
def _beat_ready(**_: Any) -> None:
    heartbeat.start_heartbeat(settings, process=PROCESS, roles=["beat"])
    heap.freeze()  # beat's own process; in a worker, what the beat thread built so far


class EmbeddedBeat(bootsteps.StartStopStep):
    """``--embed-beat``: beat as a thread of this worker (no fork, no process of its own).

    The default Procfile's one worker runs it; a stack must run exactly one beat, so the
    scale-out Procfile keeps beat as its own process instead (``celery beat``)."""

    label = "EmbeddedBeat"
    conditional = True

    def __init__(self, parent: Any, embed_beat: bool = False, **kwargs: Any) -> None:
        self.enabled = bool(embed_beat)
        self.thread: BeatThread | None = None
        super().__init__(parent, **kwargs)

    def start(self, parent: Any) -> None:
        self.thread = BeatThread(parent.app)
        self.thread.start()

    def stop(self, parent: Any) -> None:
        if self.thread is not None:
            self.thread.stop()

    shutdown = stop


app.user_options["worker"].add(
    click.Option(
        ["--embed-beat"],
        is_flag=True,
        default=False,
        help="Run beat as a thread of this worker (one beat per stack).",
    )
)
app.steps["worker"].add(EmbeddedBeat)
