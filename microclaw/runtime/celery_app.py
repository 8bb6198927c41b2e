"""The Celery application: broker, routes and process hooks, built from settings.

``celery -A microclaw.runtime.celery_app worker|beat`` imports this module, which loads and validates
the settings once (an invalid setting stops the process with a message naming the key). Chat
tasks ignore results (sandbox tasks carry their own result store, see
`microclaw.sandbox.client`); with the SQLite broker remote control, gossip, mingle and
heartbeats are off (the transport has no fanout). The sandbox role boots and shuts down its
runtime through the hooks below (`workers.sandbox`). `publish_kick` / `publish_deliver` are
the only ways other code publishes work.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from microclaw.broker.transport import celery_broker_options, dispose_engines
from microclaw.config import Settings, load_settings
from microclaw.logs import configure_logging
from microclaw.runtime import queues

logger = logging.getLogger(__name__)

TASK_MODULES = (
    "tasks.inbound",
    "tasks.router",
    "tasks.outbound",
    "tasks.scheduler",
    "tasks.maintenance",
    "tasks.sandbox",
    "tasks.typing",
)


def create_app(settings: Settings) -> Celery:
    """A Celery app wired to the configured broker, with MicroClaw's routes and beat schedule."""
    from workers.beat import beat_schedule

    app = Celery("microclaw", set_as_current=True)
    app.conf.update(
        **celery_broker_options(settings.broker.url, settings.broker.polling_interval),
        imports=TASK_MODULES,
        task_routes=queues.ROUTES,
        task_default_queue=queues.ROUTER,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.router.concurrency,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=not settings.broker.is_sqlite,
        worker_send_task_events=False,
        broker_heartbeat=0,
        timezone="UTC",
        beat_schedule=beat_schedule(settings),
        beat_scheduler="workers.beat:DatabaseScheduler",
    )
    app.conf.microclaw_settings = settings
    return app


settings = load_settings()
app = create_app(settings)


def publish_kick(chat_jid: str) -> None:
    """Wake a group (idempotent)."""
    app.send_task(queues.KICK, args=[chat_jid], queue=queues.ROUTER)


def publish_typing(chat_jid: str) -> None:
    """Show "typing…" in the chat (best effort; dropped if not sent within 10 s)."""
    app.send_task(queues.TYPING, args=[chat_jid], queue=queues.OUTBOUND, expires=10)


def publish_deliver(chat_jid: str) -> None:
    """Ask the outbound worker to send a chat's pending replies (idempotent)."""
    app.send_task(queues.DELIVER, args=[chat_jid], queue=queues.OUTBOUND)


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(settings.logging.level, settings.logging.format, role="celery")


@signals.worker_init.connect
def _worker_init(**_: Any) -> None:
    # Any process may be the first to start: each brings the schema up to date (serialized by
    # SQLite's write lock; a no-op when already current). A failure stops the worker.
    from microclaw.runtime.wiring import bootstrap_database

    bootstrap_database(settings)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Engines and connections cached before fork must not be shared with the parent.
    from workers import context

    dispose_engines()
    context.reset()
    context.warm_up()


@signals.worker_ready.connect
def _worker_ready(sender: Any = None, **_: Any) -> None:
    from workers.heartbeat import start_heartbeat

    try:
        role = ",".join(sorted(sender.app.amqp.queues.consume_from)) or "worker"
    except AttributeError:
        role = "worker"
    start_heartbeat(settings, role=role)


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
        from workers.sandbox import boot_worker

        boot_worker(settings, instance)


@signals.worker_shutdown.connect
def _sandbox_shutdown(**_: Any) -> None:
    from workers.sandbox import shutdown_worker

    shutdown_worker()


@signals.beat_init.connect
def _beat_ready(**_: Any) -> None:
    from workers.heartbeat import start_heartbeat

    start_heartbeat(settings, role="beat")
