"""The Celery application factory, beat's fixed schedule, and the one way to publish work.

`create_app` turns validated settings into a Celery app: broker, routes, task modules, beat
schedule. Chat tasks ignore results (sandbox tasks carry their own result store, see
`microclaw.sandbox.client`). Remote control and task events are on for every broker (the
SQLite transport has fanout and shared bindings), so ``celery inspect|control|status|events``
and flower work; Celery itself turns mingle and gossip on only for Redis and RabbitMQ. The
idempotent chat and maintenance tasks ack late: a worker killed mid-task leaves its messages
to be delivered again (`ACKS_LATE`). `Publisher` is how other code publishes
kicks, deliveries, typing pulses and early sandbox starts.

Workers run Celery's threads pool by default (``worker_pool``): the roles are I/O bound, and a
forking pool on the SQLite broker froze when one child was SIGKILLed (all children asleep on
billiard's shared semaphore; SQLite and SQLAlchemy state crossing fork). One worker process
serves the router, outbound, maintenance and sandbox queues with ``router.concurrency`` threads
plus `EXTRA_THREADS` for deliveries and upkeep and `SANDBOX_THREADS` for tool commands (set by
``workers/app.py`` when a worker serves both). Every task message carries the time it was published
(`microclaw.broker.store.SENT_HEADER`), so health can tell how long ready work has waited.

Does not: create the process-wide app or connect Celery's signals. The worker and beat
processes do that in ``workers/app.py`` (``celery -A workers.app``); the host builds an app
here only to publish.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from celery import Celery, signals

from microclaw.broker.store import SENT_HEADER
from microclaw.broker.transport import celery_broker_options
from microclaw.config import Settings
from microclaw.runtime import queues

TASK_MODULES = (
    "tasks.inbound",
    "tasks.router",
    "tasks.outbound",
    "tasks.scheduler",
    "tasks.maintenance",
    "tasks.sandbox",
    "tasks.typing",
)
BEAT_SCHEDULER = "workers.beat:DatabaseScheduler"
# Threads beyond ``router.concurrency`` in a worker that also serves outbound and maintenance.
EXTRA_THREADS = 3
# And beyond those, in a worker that serves the sandbox queue too (the default Procfile's): a
# tool command runs on a thread of its own while the run that asked for it waits.
SANDBOX_THREADS = 8
# Tasks that are safe to run twice (kick/deliver are idempotent by design, ingest by message
# id, the maintenance tasks by construction) ack after they ran, so a crash redelivers them.
# Sandbox tasks ack on start: re-running a tool command after a crash is not harmless.
ACKS_LATE = (
    queues.KICK,
    queues.INGEST,
    queues.DELIVER,
    queues.TYPING,
    queues.TICK,
    queues.SWEEP,
    queues.CLEANUP,
)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Beat's fixed entries: the scheduler tick, the sweeper, cleanup and the sandbox's idle stop
    (on the sandbox queue: only the sandbox worker holds containers)."""
    b = settings.beat
    return {
        "scheduler-tick": {
            "task": queues.TICK,
            "schedule": timedelta(seconds=b.tick_interval_s),
            "options": {"queue": queues.MAINTENANCE, "expires": b.tick_interval_s * 5},
        },
        "sweeper": {
            "task": queues.SWEEP,
            "schedule": timedelta(seconds=b.sweep_interval_s),
            "options": {"queue": queues.MAINTENANCE, "expires": b.sweep_interval_s * 5},
        },
        "cleanup": {
            "task": queues.CLEANUP,
            "schedule": timedelta(seconds=settings.broker.cleanup_interval_s),
            "options": {"queue": queues.MAINTENANCE},
        },
        "sandbox-stop-idle": {
            "task": queues.SANDBOX_STOP_IDLE,
            "schedule": timedelta(seconds=settings.sandbox.idle_check_interval_s),
            "options": {"queue": queues.SANDBOX, "expires": settings.sandbox.idle_check_interval_s * 2},
        },
    }


def create_app(settings: Settings, *, set_as_current: bool = False) -> Celery:
    """A Celery app wired to the configured broker, with MicroClaw's routes and beat schedule."""
    app = Celery("microclaw", set_as_current=set_as_current)
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
        worker_pool="threads",
        worker_concurrency=settings.router.concurrency + EXTRA_THREADS,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=True,
        worker_send_task_events=True,
        task_annotations={name: {"acks_late": True} for name in ACKS_LATE},
        broker_heartbeat=0,
        timezone="UTC",
        beat_schedule=beat_schedule(settings),
        beat_scheduler=BEAT_SCHEDULER,
    )
    app.conf.microclaw_settings = settings
    return app


@signals.before_task_publish.connect
def _stamp_sent(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Record when each task message was published (read by health: how long ready work waits)."""
    if headers is not None:
        headers.setdefault(SENT_HEADER, int(time.time() * 1000))


class Publisher:
    """Publishes MicroClaw's wake-ups through one app. Every message it sends is idempotent."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def kick(self, chat_jid: str) -> None:
        """Wake a group (idempotent)."""
        self.app.send_task(queues.KICK, args=[chat_jid], queue=queues.ROUTER)

    def deliver(self, chat_jid: str) -> None:
        """Ask the outbound worker to send a chat's pending replies (idempotent)."""
        self.app.send_task(queues.DELIVER, args=[chat_jid], queue=queues.OUTBOUND)

    def typing(self, chat_jid: str) -> None:
        """Show "typing…" in the chat (best effort; dropped if not sent within 10 s)."""
        self.app.send_task(queues.TYPING, args=[chat_jid], queue=queues.OUTBOUND, expires=10)

    def sandbox_ensure(self, group: str, is_main: bool, expires_s: float = 60.0) -> None:
        """Start the group's container now, without waiting for it (fire and forget): sent when a
        run starts, so the container boots while the first model call is in flight."""
        self.app.send_task(
            queues.SANDBOX_ENSURE,
            kwargs={"group": group, "is_main": is_main, "extra_mounts": []},
            queue=queues.SANDBOX,
            ignore_result=True,
            expires=expires_s,
        )
