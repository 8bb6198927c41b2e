"""The worker and beat processes' Celery app (``celery -A workers.app worker|beat``).

Importing this module loads and validates the settings once (an invalid setting stops the
process with a message naming the key), builds the app and connects Celery's process hooks:
logging, migrating the schema at start, rebuilding per-process state after fork, heartbeats,
and booting / shutting down the sandbox role. Task modules (``tasks/``) decorate their
functions with `app` and publish through `publish`.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from microclaw.broker.transport import dispose_engines
from microclaw.config import load_settings
from microclaw.logs import configure_logging
from microclaw.runtime import queues
from microclaw.runtime.celery_app import Publisher, create_app
from microclaw.runtime.wiring import bootstrap_database
from workers import context, heartbeat, sandbox

settings = load_settings()
app = create_app(settings, set_as_current=True)
publish = Publisher(app)
context.bind(settings, app, publish)


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(settings.logging.level, settings.logging.format, role="celery")


@signals.worker_init.connect
def _worker_init(**_: Any) -> None:
    # Any process may be the first to start: each brings the schema up to date (serialized by
    # SQLite's write lock; a no-op when already current). A failure stops the worker.
    bootstrap_database(settings)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Engines and connections cached before fork must not be shared with the parent.
    dispose_engines()
    context.reset()
    context.warm_up()


@signals.worker_ready.connect
def _worker_ready(sender: Any = None, **_: Any) -> None:
    try:
        role = ",".join(sorted(sender.app.amqp.queues.consume_from)) or "worker"
    except AttributeError:
        role = "worker"
    heartbeat.start_heartbeat(settings, role=role)


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
        sandbox.boot_worker(settings, instance)


@signals.worker_shutdown.connect
def _sandbox_shutdown(**_: Any) -> None:
    sandbox.shutdown_worker()


@signals.beat_init.connect
def _beat_ready(**_: Any) -> None:
    heartbeat.start_heartbeat(settings, role="beat")
