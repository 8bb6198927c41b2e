"""Envelopes published to the ``microclaw.ingest`` task, handled by a real worker process."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from microclaw.runtime import queues
from microclaw.store import audit, groups
from microclaw.store.db import read_tx, write_tx
from microclaw.store.models import Message
from tests.integration.stack import wait_for

pytestmark = pytest.mark.slow


def envelope(text: str, message_id: str, **changes: object) -> dict:
    env = {
        "v": 1,
        "seq": 0,
        "ts_ms": 1_700_000_000_000,
        "source": "gateway",
        "message_id": message_id,
        "payload": {"chat_id": "local:dev", "sender": "d1", "sender_name": "Desk", "text": text},
    }
    env.update(changes)
    return env


def test_bad_envelopes_are_audited_and_the_worker_keeps_serving(make_stack) -> None:
    stack = make_stack(MICROCLAW_ROUTER__MAX_TEXT_BYTES="1024")
    with write_tx(stack.engine) as conn:
        groups.register_group(
            conn, jid="local:dev", name="dev", folder="local_dev", trigger="@Andy", requires_trigger=False
        )
    stack.router("router-1", 1)
    stack.outbound()
    stack.wait_workers(2)
    bad = [
        "{not json",
        json.dumps(envelope("x", "m-1", v=7)),  # unknown version
        json.dumps({"v": 1, "payload": {}}),  # missing fields
        json.dumps(envelope("x" * 2000, "m-2")),  # oversized text
        '{"v": 1, "seq": 0, "ts_ms": 0, "source": "g", "message_id": "m-3", '
        '"payload": {"chat_id": "local:dev", "text": "\\ud800"}}',  # a lone surrogate: not UTF-8
        42,
        '{"v": 1, "payload": ' + "[" * 5000 + "]" * 5000 + "}",  # deeper than json's recursion
        '{"v": 1, "seq": ' + "9" * 5000 + "}",  # past Python's integer digit limit
    ]
    for raw in bad:
        stack.app.send_task(queues.INGEST, args=[raw], queue=queues.ROUTER)
    stack.app.send_task(
        queues.INGEST, args=[json.dumps(envelope("still here?", "m-ok"))], queue=queues.ROUTER
    )
    replies = wait_for(lambda: stack.mailbox.after(0, chat_id="local:dev"), 60, "the good message's reply")
    assert [r.text for r in replies] == ["seen: still here?"]
    with read_tx(stack.engine) as conn:
        rejected = audit.recent(conn, kind="envelope.rejected")
        stored = conn.execute(select(func.count()).select_from(Message.__table__)).scalar_one()
    assert len(rejected) == len(bad)
    reasons = " / ".join(r["detail"]["reason"] for r in rejected)
    for fragment in (
        "not JSON",
        "unsupported envelope version 7",
        "missing required field",
        "the limit is 1024",
        "not valid UTF-8",
        "must be a JSON object",
        "nested too deeply",
        "digits",
    ):
        assert fragment in reasons
    assert stored == 1
    assert stack.procs["router-1"].poll() is None


def test_same_message_id_twice_one_row_one_reply(make_stack) -> None:
    stack = make_stack()
    with write_tx(stack.engine) as conn:
        groups.register_group(
            conn, jid="local:dev", name="dev", folder="local_dev", trigger="@Andy", requires_trigger=False
        )
    stack.router("router-1", 2)
    stack.outbound()
    stack.beat()
    stack.wait_workers(2)
    raw = json.dumps(envelope("only once please", "gw:dev:77"))
    stack.app.send_task(queues.INGEST, args=[raw], queue=queues.ROUTER)
    stack.app.send_task(queues.INGEST, args=[raw], queue=queues.ROUTER)
    wait_for(lambda: stack.mailbox.after(0, chat_id="local:dev"), 60, "the reply")

    time.sleep(3)  # both ingest tasks have long run; give a duplicate reply every chance to appear
    with read_tx(stack.engine) as conn:
        assert conn.execute(select(func.count()).select_from(Message.__table__)).scalar_one() == 1
    assert [r.text for r in stack.mailbox.after(0, chat_id="local:dev")] == ["seen: only once please"]
