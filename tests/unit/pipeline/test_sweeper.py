from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from sqlalchemy import update

from microclaw.errors import LeaseLost
from microclaw.pipeline import leases
from microclaw.pipeline.inbound import ingest
from microclaw.pipeline.sweeper import sweep
from microclaw.store import outbox
from microclaw.store.db import now_ms, write_tx
from microclaw.store.models import GroupState, OutboxEntry
from tests.helpers import envelope, register


def test_lost_kick_is_re_kicked_after_it_goes_stale(engine) -> None:
    register(engine, "fake:g", requires_trigger=False)
    ingest(engine, envelope("fake:g", "hi"))  # kick requested, but say the broker lost it
    assert sweep(engine, stale_after_ms=60_000).kick == []  # not stale yet
    with write_tx(engine) as conn:
        conn.execute(update(GroupState.__table__).values(kick_requested_ms=now_ms() - 61_000))
    assert sweep(engine, stale_after_ms=60_000).kick == ["fake:g"]
    assert sweep(engine, stale_after_ms=60_000).kick == []  # marked outstanding again


def test_live_lease_means_someone_is_on_it(engine) -> None:
    register(engine, "fake:g", requires_trigger=False)
    ingest(engine, envelope("fake:g", "hi"))
    with write_tx(engine) as conn:
        conn.execute(update(GroupState.__table__).values(kick_requested_ms=None))
        leases.acquire(conn, leases.group_lease("fake:g"), "w", ttl_ms=60_000, now_ms=now_ms())
    assert sweep(engine, stale_after_ms=1).kick == []


def test_undelivered_and_stranded_replies_are_requeued(engine) -> None:
    with write_tx(engine) as conn:
        outbox.add(conn, key="a", chat_jid="fake:a", text="x")
        outbox.add(conn, key="b", chat_jid="fake:b", text="y")
    assert sweep(engine, stale_after_ms=60_000).deliver == []  # fresh: its deliver task is on its way
    with write_tx(engine) as conn:
        t = OutboxEntry.__table__
        conn.execute(update(t).where(t.c.idempotency_key == "a").values(created_at_ms=0))
        conn.execute(update(t).where(t.c.idempotency_key == "b").values(status="sending", claimed_at_ms=0))
    assert sorted(sweep(engine, stale_after_ms=60_000).deliver) == ["fake:a", "fake:b"]


def test_a_group_whose_holder_was_killed_is_re_kicked_at_once(engine) -> None:
    register(engine, "fake:g", requires_trigger=False)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    holder = f"router@{socket.gethostname()}:{proc.pid}#{leases.incarnation(proc.pid)}"
    with write_tx(engine) as conn:
        token = leases.acquire(conn, leases.group_lease("fake:g"), holder, ttl_ms=120_000, now_ms=now_ms())
    ingest(engine, envelope("fake:g", "hi"))  # its kick is outstanding (the holder said "busy")
    assert sweep(engine, stale_after_ms=60_000).kick == []  # the holder is alive: on it
    proc.kill()
    proc.wait()
    assert sweep(engine, stale_after_ms=60_000).kick == ["fake:g"]  # not after the 120 s TTL
    assert sweep(engine, stale_after_ms=60_000).kick == []  # once
    with write_tx(engine) as conn, pytest.raises(LeaseLost):  # the dead holder's token is fenced
        leases.fence(conn, leases.group_lease("fake:g"), token, ttl_ms=1000, now_ms=now_ms())


def test_a_kick_requested_in_the_future_clock_stepped_back_does_not_silence_the_group(engine) -> None:
    register(engine, "fake:g", requires_trigger=False)
    ingest(engine, envelope("fake:g", "hi"))
    with write_tx(engine) as conn:  # requested before the wall clock went back an hour
        conn.execute(update(GroupState.__table__).values(kick_requested_ms=now_ms() + 3_600_000))
    assert sweep(engine, stale_after_ms=60_000).kick == ["fake:g"]
