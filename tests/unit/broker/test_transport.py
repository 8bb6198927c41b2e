"""The SQLite transport against a real broker file: delivery, ownership, wake-ups, housekeeping
(in-process kombu and forked processes, no mocks)."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import signal
import sqlite3
import stat
import threading
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection, Consumer, Queue

from microclaw.broker import doorbell
from microclaw.broker.transport import (
    SQLiteTransport,
    celery_broker_options,
    housekeep,
    queue_depths,
)
from tests.conftest import file_mode
from tests.unit.broker.conftest import connect

URL = "sqla+sqlite:///{}"


def rows(path: Path, where: str = "1") -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT id, queue, owner FROM broker_message WHERE {where} ORDER BY id").fetchall()
    finally:
        db.close()


def publish(conn: Connection, queue: str, values: range | list[int]) -> None:
    producer = conn.Producer()
    for n in values:
        producer.publish({"n": n}, routing_key=queue, declare=[Queue(queue)])


def test_options_pick_the_transport_only_for_sqlite() -> None:
    opts = celery_broker_options("sqla+sqlite:////tmp/x.db", 0.05)
    assert opts["broker_url"] == "sqlite:////tmp/x.db"
    assert opts["broker_transport"] == "microclaw.broker.transport:SQLiteTransport"
    assert celery_broker_options("redis://127.0.0.1:6379/0", 0.05)["broker_url"] == "redis://127.0.0.1:6379/0"
    assert "broker_transport" not in celery_broker_options("redis://127.0.0.1:6379/0", 0.05)


def test_the_transport_advertises_what_it_supports() -> None:
    # Celery disables events for driver type 'sql' and routes broadcasts only with fanout.
    assert SQLiteTransport.driver_type == "sqlite"
    assert {"direct", "topic", "fanout"} <= SQLiteTransport.implements.exchange_type
    assert SQLiteTransport.Channel.supports_fanout


def test_publish_consume_wal_file_mode_and_acked_rows_are_deleted(broker_path: Path) -> None:
    with connect(broker_path) as conn:
        publish(conn, "t.q", range(3))
        assert queue_depths(URL.format(broker_path)) == {"t.q": 3}
        got = []
        with conn.SimpleQueue(Queue("t.q")) as sq:
            for _ in range(3):
                msg = sq.get(timeout=2)
                got.append(msg.payload["n"])
                msg.ack()
    assert got == [0, 1, 2]
    assert rows(broker_path) == []
    assert sqlite3.connect(broker_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stat.S_IMODE(broker_path.stat().st_mode) == 0o600


def test_a_delivered_message_stays_owned_until_acked(broker_path: Path) -> None:
    with connect(broker_path) as producer, connect(broker_path) as a, connect(broker_path) as b:
        publish(producer, "t.q", [1])
        msg = a.default_channel.basic_get("t.q")
        assert msg.payload == {"n": 1}
        assert b.default_channel.basic_get("t.q") is None  # owned by a: invisible to b
        assert queue_depths(URL.format(broker_path)) == {"t.q": 0}
        (row,) = rows(broker_path)
        assert row[2] == a.transport.owner_id()
        msg.ack()
        assert rows(broker_path) == []


def test_requeue_and_close_return_messages_to_their_original_place(broker_path: Path) -> None:
    with connect(broker_path) as producer:
        publish(producer, "t.q", range(5))
    a = connect(broker_path)
    first, second = a.default_channel.basic_get("t.q"), a.default_channel.basic_get("t.q")
    first.requeue()
    assert second.payload == {"n": 1}
    a.release()  # graceful close: its unacked message 1 goes back, not to the tail
    with connect(broker_path) as b:
        order = []
        while (m := b.default_channel.basic_get("t.q")) is not None:
            order.append((m.payload["n"], bool(m.delivery_info.get("redelivered"))))
            m.ack()
    assert order == [(0, True), (1, True), (2, False), (3, False), (4, False)]


def _claim_then_die(path: str, claimed: Any, count: int) -> None:
    conn = connect(Path(path))
    for _ in range(count):
        conn.default_channel.basic_get("t.q")
    claimed.set()
    signal.pause()  # hold them, unacked, until SIGKILL


def test_messages_of_a_killed_consumer_come_back_in_order(broker_path: Path) -> None:
    with connect(broker_path) as producer:
        publish(producer, "t.q", range(6))
    ctx = multiprocessing.get_context("fork")
    claimed = ctx.Event()
    child = ctx.Process(target=_claim_then_die, args=(str(broker_path), claimed, 3))
    child.start()
    assert claimed.wait(60)
    with connect(broker_path) as survivor:
        assert [m.payload["n"] for m in [survivor.default_channel.basic_get("t.q")]] == [3]
        assert survivor.transport.reap() == 0  # the holder is alive: nothing comes back
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        assert survivor.transport.reap() == 1
        got = []
        while (m := survivor.default_channel.basic_get("t.q")) is not None:
            got.append(m.payload["n"])
            m.ack()
    assert got == [0, 1, 2, 4, 5]  # 3 is still the survivor's (unacked), the rest in order


def _close_inherited(path: str, done: Any) -> None:
    # A forked copy of a consuming connection (a prefork pool child) closing it must not hand
    # back its parent's deliveries.
    conn = _inherited[0]
    conn.release()
    done.set()


_inherited: list[Connection] = []


def test_a_forked_child_never_releases_its_parents_deliveries(broker_path: Path) -> None:
    with connect(broker_path) as producer:
        publish(producer, "t.q", [7])
    parent = connect(broker_path)
    msg = parent.default_channel.basic_get("t.q")
    _inherited[:] = [parent]
    ctx = multiprocessing.get_context("fork")
    done = ctx.Event()
    child = ctx.Process(target=_close_inherited, args=(str(broker_path), done))
    child.start()
    child.join(30)
    assert done.is_set()
    assert [r[2] for r in rows(broker_path)] == [parent.transport.owner_id()]
    assert doorbell.alive(parent.transport.bells, parent.transport.owner_id())
    msg.ack()
    parent.release()


def test_claims_are_exclusive_across_consumers(broker_path: Path) -> None:
    with connect(broker_path) as a, connect(broker_path) as b:
        publish(a, "t.q", range(50))
        got = []
        channels = [a.default_channel, b.default_channel]
        while True:
            progressed = False
            for channel in channels:
                msg = channel.basic_get("t.q")
                if msg is not None:
                    got.append(msg.payload["n"])
                    msg.ack()
                    progressed = True
            if not progressed:
                break
    assert got == list(range(50))  # each once, oldest first


def test_a_publish_from_another_process_wakes_a_sleeping_consumer(broker_path: Path) -> None:
    """The consumer's backstop poll is an hour: only the doorbell can deliver in time."""
    consumer_conn = connect(broker_path, polling_interval=3600)
    got: list[Any] = []
    queue = Queue("wake.q")
    consumer = Consumer(
        consumer_conn, [queue], accept=["json"], callbacks=[lambda body, m: (got.append(body), m.ack())]
    )
    consumer.consume()
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            consumer_conn.drain_events(timeout=30)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=drain)
    waiter.start()
    ctx = multiprocessing.get_context("spawn")
    pub = ctx.Process(target=_publish_one, args=(str(broker_path),))
    pub.start()
    pub.join(60)
    waiter.join(60)
    consumer.cancel()
    consumer_conn.release()
    assert errors == [] and got == [{"n": 1}]


def _publish_one(path: str) -> None:
    with connect(Path(path)) as conn:
        publish(conn, "wake.q", [1])


def test_fanout_reaches_every_bound_queue_and_not_unbound_ones(broker_path: Path) -> None:
    from kombu import Exchange

    ex = Exchange("bcast", type="fanout")
    with connect(broker_path) as a, connect(broker_path) as b:
        with a.channel() as ch:
            Queue("one", ex)(ch).declare()
            Queue("other")(ch).declare()
        with b.channel() as ch:
            Queue("two", ex)(ch).declare()
        with connect(broker_path) as producer:
            producer.Producer().publish({"hi": 1}, exchange=ex)
    assert queue_depths(URL.format(broker_path)) == {"one": 1, "two": 1, "other": 0}


def test_expiring_queues_of_gone_clients_are_deleted(broker_path: Path) -> None:
    with connect(broker_path) as conn:
        conn.default_channel.queue_declare("abc.reply.celery.pidbox", arguments={"x-expires": 10_000})
        conn.default_channel.queue_declare("microclaw.router")
        conn.Producer().publish({"n": 1}, routing_key="abc.reply.celery.pidbox")
    db = sqlite3.connect(broker_path)
    db.execute("UPDATE broker_queue SET idle_since_ms = idle_since_ms - 60000")  # a minute ago
    db.commit()
    db.close()
    assert housekeep(URL.format(broker_path))["queues_expired"] == 1
    assert queue_depths(URL.format(broker_path)) == {"microclaw.router": 0}


def test_a_queue_with_a_live_consumer_never_expires(broker_path: Path) -> None:
    with connect(broker_path) as conn:
        queue = Queue("mine.pidbox", expires=1)
        with Consumer(conn, [queue], accept=["json"]):
            db = sqlite3.connect(broker_path)
            db.execute("UPDATE broker_queue SET idle_since_ms = idle_since_ms - 60000")
            db.commit()
            db.close()
            assert housekeep(URL.format(broker_path))["queues_expired"] == 0
    assert "mine.pidbox" in queue_depths(URL.format(broker_path))


def test_queue_depths_by_name_and_without_a_file(broker_path: Path, tmp_path: Path) -> None:
    with connect(broker_path) as conn:
        publish(conn, "a", [1, 2])
        conn.default_channel.queue_declare("x.reply.celery.pidbox")
    assert queue_depths(URL.format(broker_path), ["a", "b"]) == {"a": 2, "b": 0}
    assert queue_depths(URL.format(tmp_path / "absent.db")) == {}
    assert housekeep(URL.format(tmp_path / "absent.db")) == {}
    assert not (tmp_path / "absent.db").exists()


def test_waiting_messages_of_the_previous_transport_are_kept_in_order(broker_path: Path) -> None:
    db = sqlite3.connect(broker_path)
    db.executescript(
        "CREATE TABLE kombu_queue (id INTEGER PRIMARY KEY, name TEXT UNIQUE);"
        "CREATE TABLE kombu_message (id INTEGER PRIMARY KEY, visible BOOLEAN, timestamp DATETIME,"
        " payload TEXT, version INTEGER, queue_id INTEGER);"
        "INSERT INTO kombu_queue VALUES (1, 'old.q');"
    )
    for n, visible in ((1, 1), (2, 0), (3, 1)):
        body = json.dumps(
            {
                "body": base64.b64encode(json.dumps({"n": n}).encode()).decode(),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {},
                "properties": {"delivery_info": {}, "body_encoding": "base64", "delivery_tag": f"t{n}"},
            }
        )
        db.execute(
            "INSERT INTO kombu_message (visible, timestamp, payload, version, queue_id)"
            " VALUES (?, ?, ?, 1, 1)",
            (visible, f"2024-01-01 00:00:0{n}", body),
        )
    db.commit()
    db.close()
    with connect(broker_path) as conn:
        got = []
        while (m := conn.default_channel.basic_get("old.q")) is not None:
            got.append(m.payload["n"])
            m.ack()
    assert got == [1, 3]


def _publish_from_fresh_process(path: str, start: Any, count: int) -> None:
    start.wait()
    with connect(Path(path)) as conn:
        publish(conn, "race.q", range(count))


def test_processes_declaring_the_same_queue_at_once_all_succeed(broker_path: Path) -> None:
    """Publishers and consumers starting together on a fresh broker file (schema + queue rows)."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_publish_from_fresh_process, args=(str(broker_path), start, 20)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert queue_depths(URL.format(broker_path)) == {"race.q": 80}


def test_basic_get_on_an_empty_queue_raises_nothing(broker_path: Path) -> None:
    with connect(broker_path) as conn:
        assert conn.default_channel.basic_get("nothing") is None
        with pytest.raises(Empty):
            conn.default_channel._get("nothing")


def test_the_broker_file_holding_task_payloads_is_private_whatever_the_umask(
    broker_path: Path, umask_022: None
) -> None:
    broker_path.parent.mkdir(parents=True, exist_ok=True)
    broker_path.touch(mode=0o644)  # as an older version left it
    broker_path.chmod(0o644)
    with connect(broker_path) as conn:
        conn.Producer().publish({"text": "private"}, routing_key="t.q", declare=[Queue("t.q")])
        modes = {p.name: file_mode(p) for p in broker_path.parent.iterdir() if p.name.startswith("broker.db")}
    assert {"broker.db", "broker.db-wal"} <= set(modes)
    assert {m for name, m in modes.items() if not name.endswith("-consumers")} == {0o600}
