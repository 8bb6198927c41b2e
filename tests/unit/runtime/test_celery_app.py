"""microclaw.runtime.celery_app: the app factory, beat's fixed schedule and the Publisher,
against a real SQLite broker file (published messages are read back from it)."""

from __future__ import annotations

import base64
import json
import sqlite3

from microclaw.broker.store import SENT_HEADER, ready_waits
from microclaw.broker.transport import queue_depths, sqlite_path
from microclaw.config import Settings
from microclaw.runtime import queues
from microclaw.runtime.celery_app import EXTRA_THREADS, TASK_MODULES, Publisher, beat_schedule, create_app
from microclaw.store.db import now_ms


def _published(settings: Settings) -> list[tuple[str, str, list[object]]]:
    """(queue, task name, args) of every message in the broker file, oldest first."""
    with sqlite3.connect(sqlite_path(settings.broker.url)) as db:
        rows = db.execute("SELECT queue, payload FROM broker_message ORDER BY id").fetchall()
    out = []
    for queue, payload in rows:
        message = json.loads(payload)
        body = json.loads(base64.b64decode(message["body"]))
        out.append((queue, message["headers"]["task"], body[0]))
    return out


def test_publisher_sends_each_wake_up_to_its_queue(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)  # the broker file lives there
    app = create_app(settings)
    publish = Publisher(app)
    publish.kick("tg:1")
    publish.deliver("tg:1")
    publish.typing("tg:2")
    assert _published(settings) == [
        (queues.ROUTER, queues.KICK, ["tg:1"]),
        (queues.OUTBOUND, queues.DELIVER, ["tg:1"]),
        (queues.OUTBOUND, queues.TYPING, ["tg:2"]),
    ]
    assert queue_depths(settings.broker.url) == {queues.ROUTER: 1, queues.OUTBOUND: 2}


def test_the_factory_does_not_become_the_current_app_unless_asked(settings: Settings) -> None:
    from celery import current_app

    app = create_app(settings)
    assert current_app is not app
    assert app.conf.imports == TASK_MODULES
    assert app.conf.microclaw_settings is settings
    # One threads-pool worker serves router, outbound and maintenance: no fork, ever.
    assert app.conf.worker_pool == "threads"
    assert app.conf.worker_concurrency == settings.router.concurrency + EXTRA_THREADS
    # The SQLite transport has fanout and shared bindings: remote control and events are on.
    assert app.conf.worker_enable_remote_control is True
    assert app.conf.worker_send_task_events is True


def test_beat_schedule_runs_maintenance_on_its_queue_and_the_idle_stop_on_the_sandbox(
    settings: Settings,
) -> None:
    schedule = beat_schedule(settings)
    assert {name: entry["task"] for name, entry in schedule.items()} == {
        "scheduler-tick": queues.TICK,
        "sweeper": queues.SWEEP,
        "cleanup": queues.CLEANUP,
        "sandbox-stop-idle": queues.SANDBOX_STOP_IDLE,
    }
    assert schedule["sandbox-stop-idle"]["options"]["queue"] == queues.SANDBOX
    for name in ("scheduler-tick", "sweeper", "cleanup"):
        assert schedule[name]["options"]["queue"] == queues.MAINTENANCE
    assert schedule["sweeper"]["schedule"].total_seconds() == settings.beat.sweep_interval_s


def test_every_message_carries_its_publish_time_and_waits_are_read_back(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    publish = Publisher(create_app(settings))
    before = now_ms()
    publish.kick("tg:1")
    publish.sandbox_ensure("tg_1", is_main=True)
    with sqlite3.connect(sqlite_path(settings.broker.url)) as db:
        payloads = [json.loads(p) for (p,) in db.execute("SELECT payload FROM broker_message ORDER BY id")]
    assert all(before <= m["headers"][SENT_HEADER] <= now_ms() for m in payloads)
    ensure = payloads[1]
    assert ensure["headers"]["task"] == queues.SANDBOX_ENSURE
    assert ensure["headers"]["expires"] is not None  # dropped unrun when nobody takes it in time
    body = json.loads(base64.b64decode(ensure["body"]))
    assert body[1] == {"group": "tg_1", "is_main": True, "extra_mounts": []}
    sent = payloads[0]["headers"][SENT_HEADER]
    waits = ready_waits(sqlite_path(settings.broker.url), queues.QUEUES, now=sent + 12_345)
    assert waits[queues.ROUTER] == 12_345
    assert queues.OUTBOUND not in waits  # nothing ready there


def test_a_message_not_yet_due_does_not_count_as_waiting(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    app = create_app(settings)
    app.send_task(queues.KICK, args=["tg:1"], queue=queues.ROUTER, countdown=60)
    path = sqlite_path(settings.broker.url)
    assert ready_waits(path, [queues.ROUTER], now=now_ms()) == {}
    assert ready_waits(path, [queues.ROUTER], now=now_ms() + 70_000)[queues.ROUTER] >= 9_000


def test_no_broker_file_means_no_waits(settings: Settings) -> None:
    assert ready_waits(sqlite_path(settings.broker.url), queues.QUEUES, now=now_ms()) == {}
