"""The default Procfile's worker: ``microclaw-worker`` with beat as a thread of it.

One process serves router, outbound and maintenance and runs beat (``--embed-beat``), so no
separate beat process is needed: the sweeper that only beat publishes still recovers a lost
wake-up, the process reports every role it serves under its own name, and its lease holders
carry that name too (``worker@host:pid#incarnation``), so `status` and `health` name real
processes.
"""

from __future__ import annotations

import os
import signal
import socket

import pytest
from sqlalchemy import select

from microclaw.envelope import make_envelope
from microclaw.pipeline import leases
from microclaw.pipeline.inbound import ingest_and_kick
from microclaw.runtime.status import collect_status, health_problems
from microclaw.store import groups
from microclaw.store.db import now_ms, read_tx, write_tx
from microclaw.store.models import Run, WorkerHeartbeat
from tests.integration.stack import wait_for

pytestmark = pytest.mark.slow


def test_default_worker_runs_beat_reports_its_roles_and_holds_leases_under_its_name(make_stack) -> None:
    stack = make_stack(MICROCLAW_AGENT__SCRIPTED_DELAY_S="2.0")
    with write_tx(stack.engine) as conn:
        groups.register_group(
            conn, jid="local:one", name="one", folder="local_one", trigger="@Andy", requires_trigger=False
        )
    proc = stack.default_worker("worker")
    stack.wait_workers(1)
    host = socket.gethostname()

    hb = WorkerHeartbeat.__table__

    def rows() -> list:
        with read_tx(stack.engine) as conn:
            return conn.execute(select(hb.c.name, hb.c.role, hb.c.pid)).all()

    # One process, one row, every role it serves (beat included), named as the process is.
    every_role = "beat,maintenance,outbound,router"
    wait_for(lambda: [r for r in rows() if r.role == every_role], 30, "the worker to report every role")
    assert [(r.name, r.role, r.pid) for r in rows()] == [(f"worker@{host}:{proc.pid}", every_role, proc.pid)]
    snapshot = collect_status(stack.settings, stack.engine)
    assert not [p for p in health_problems(snapshot) if p.startswith("no live")], health_problems(snapshot)

    # A message stored without a kick: only the sweeper, which only beat publishes, wakes it.
    env = make_envelope(source="local", message_id="local:one:1", chat_id="local:one", text="no kick")
    ingest_and_kick(stack.engine, env, lambda _chat: None)

    def holder() -> str | None:
        with read_tx(stack.engine) as conn:
            held = leases.held(conn, now_ms=now_ms())
        held = [h for h in held if h.name == leases.group_lease("local:one")]
        return held[0].holder if held else None

    name = wait_for(holder, 30, "the swept group's run to take its lease")
    assert name.startswith(f"worker@{host}:{proc.pid}#")
    replies = wait_for(lambda: stack.mailbox.after(0, chat_id="local:one"), 30, "the reply")
    assert [r.text for r in replies] == ["seen: no kick"]
    with read_tx(stack.engine) as conn:
        workers = conn.execute(select(Run.__table__.c.worker)).scalars().all()
    assert workers == [name]

    # SIGTERM stops the worker and its beat thread (a stuck thread would keep it alive).
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) is not None
