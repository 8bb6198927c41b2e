"""Scheduled tasks through the real clock: beat -> tick -> kick -> run -> one reply per slot."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from microclaw.scheduler.tick import iso
from microclaw.store import groups, tasks
from microclaw.store.db import read_tx, write_tx
from microclaw.store.models import TaskRunLog
from tests.integration.stack import wait_for

pytestmark = pytest.mark.slow


def test_due_tasks_fire_once_each_through_beat(make_stack) -> None:
    stack = make_stack()
    with write_tx(stack.engine) as conn:
        groups.register_group(
            conn,
            jid="local:sched",
            name="sched",
            folder="local_sched",
            trigger="@Andy",
            requires_trigger=False,
        )
        soon = iso(datetime.now(tz=UTC) + timedelta(seconds=2))
        tasks.create_task(
            conn,
            id="once-1",
            group_folder="local_sched",
            chat_jid="local:sched",
            prompt="water the plants",
            schedule_type="once",
            schedule_value=soon,
            next_run=soon,
        )
        tasks.create_task(
            conn,
            id="later",
            group_folder="local_sched",
            chat_jid="local:sched",
            prompt="not yet",
            schedule_type="interval",
            schedule_value="3600000",
            next_run=iso(datetime.now(tz=UTC) + timedelta(hours=1)),
        )
    stack.router("router-1", 1)
    stack.outbound()
    stack.beat()
    stack.wait_workers(2)
    replies = wait_for(
        lambda: stack.mailbox.after(0, chat_id="local:sched"), 60, "the scheduled task's reply"
    )
    assert len(replies) == 1
    assert "[SCHEDULED TASK" in replies[0].text and "water the plants" in replies[0].text
    time.sleep(3)  # several more ticks: the completed once task must not fire again
    assert len(stack.mailbox.after(0, chat_id="local:sched")) == 1
    with read_tx(stack.engine) as conn:
        once = tasks.get_task(conn, "once-1")
        later = tasks.get_task(conn, "later")
        logs = conn.execute(select(TaskRunLog.__table__)).all()
    assert once is not None and (once.status, once.next_run) == ("completed", None)
    assert later is not None and later.status == "active" and later.last_run is None
    assert [(log.task_id, log.status) for log in logs] == [("once-1", "success")]


def test_a_poisoned_task_does_not_stop_the_others_through_beat(make_stack) -> None:
    stack = make_stack()
    now = datetime.now(tz=UTC)
    with write_tx(stack.engine) as conn:
        groups.register_group(
            conn, jid="local:sched", name="sched", folder="local_sched", trigger="@Andy",
            requires_trigger=False,
        )  # fmt: skip
        # Due now, and its next slot (~10,000 years on) is past the year 9999: on the old code
        # every tick raised OverflowError and no task of any group ever fired.
        tasks.create_task(
            conn, id="poison", group_folder="local_sched", chat_jid="local:sched", prompt="poison",
            schedule_type="interval", schedule_value="315537897600000",
            next_run=iso(now - timedelta(seconds=1)),
        )  # fmt: skip
        soon = iso(now + timedelta(seconds=2))
        tasks.create_task(
            conn, id="good", group_folder="local_sched", chat_jid="local:sched", prompt="water the plants",
            schedule_type="once", schedule_value=soon, next_run=soon,
        )  # fmt: skip
    stack.router("router-1", 1)
    stack.outbound()
    stack.beat()
    stack.wait_workers(2)
    replies = wait_for(lambda: stack.mailbox.after(0, chat_id="local:sched"), 60, "the good task's reply")
    assert len(replies) == 1 and "water the plants" in replies[0].text
    with read_tx(stack.engine) as conn:
        poison = tasks.get_task(conn, "poison")
        logs = tasks.task_run_logs(conn, "poison")
    assert poison is not None and poison.status == "paused"
    assert len(logs) == 1 and logs[0].error is not None and "past the year 9999" in logs[0].error
