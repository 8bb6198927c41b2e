"""The SQLite transport subclass against a real broker file (in-process kombu, no mocks)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection, Queue

from microclaw.broker.transport import celery_broker_options, purge_consumed, queue_depths
from tests.conftest import file_mode


def _conn(path: Path) -> Connection:
    opts = celery_broker_options(f"sqla+sqlite:///{path}", 0.01)
    return Connection(opts["broker_url"], transport=opts["broker_transport"])


def test_options_pick_the_subclass_only_for_sqlite() -> None:
    opts = celery_broker_options("sqla+sqlite:////tmp/x.db", 0.05)
    assert opts["broker_url"] == "sqlite:////tmp/x.db"
    assert opts["broker_transport"] == "microclaw.broker.transport:SQLiteTransport"
    assert celery_broker_options("redis://127.0.0.1:6379/0", 0.05)["broker_url"] == "redis://127.0.0.1:6379/0"
    assert "broker_transport" not in celery_broker_options("redis://127.0.0.1:6379/0", 0.05)


def test_publish_consume_wal_and_purge(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    q = Queue("t.q")
    with _conn(path) as conn:
        producer = conn.Producer()
        for i in range(3):
            producer.publish({"n": i}, routing_key="t.q", declare=[q])
        assert queue_depths(f"sqla+sqlite:///{path}") == {"t.q": 3}
        got = []
        with conn.SimpleQueue(q) as sq:
            for _ in range(3):
                msg = sq.get(timeout=2)
                got.append(msg.payload["n"])
                msg.ack()
    assert got == [0, 1, 2]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert purge_consumed(f"sqla+sqlite:///{path}") == 3
    assert purge_consumed(f"sqla+sqlite:///{path}") == 0
    assert purge_consumed(f"sqla+sqlite:///{tmp_path / 'absent.db'}") == 0


def test_idle_polls_skip_the_claim_query_until_someone_commits(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    q = Queue("t.q")
    with _conn(path) as consumer, _conn(path) as producer_conn:
        channel = consumer.default_channel
        q(channel).declare()
        statements: list[str] = []
        channel._db().set_trace_callback(statements.append)  # SQLite reports every statement it runs

        def claims() -> int:
            return sum("UPDATE kombu_message" in sql for sql in statements)

        for _ in range(20):
            with pytest.raises(Empty):
                channel._get("t.q")
        assert claims() == 1  # only the first empty poll queried; the rest saw no commit
        producer_conn.Producer().publish({"hello": 1}, routing_key="t.q", declare=[q])
        assert channel._get("t.q")["body"]  # the commit is seen at once
        assert claims() == 2


def test_claims_are_exclusive_across_consumers(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    q = Queue("t.q")
    with _conn(path) as a, _conn(path) as b:
        producer = a.Producer()
        for i in range(50):
            producer.publish({"n": i}, routing_key="t.q", declare=[q])
        got = []
        channels = [a.default_channel, b.default_channel]
        while True:
            progressed = False
            for channel in channels:
                try:
                    got.append(channel.Message(channel._get("t.q"), channel=channel).decode()["n"])
                    progressed = True
                except Empty:
                    pass
            if not progressed:
                break
    assert sorted(got) == list(range(50)) and got == sorted(got)  # each once, oldest first


def _publish_from_fresh_process(path: str, start: object, count: int) -> None:
    start.wait()  # type: ignore[attr-defined]
    with _conn(Path(path)) as conn:
        producer = conn.Producer()
        for i in range(count):
            producer.publish({"n": i}, routing_key="race.q", declare=[Queue("race.q")])


def test_processes_declaring_the_same_queue_at_once_all_succeed(tmp_path: Path) -> None:
    """Publishers and consumers starting together on a fresh broker file (schema + queue rows)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    path = tmp_path / "broker.db"
    procs = [ctx.Process(target=_publish_from_fresh_process, args=(str(path), start, 20)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert queue_depths(f"sqla+sqlite:///{path}") == {"race.q": 80}


def test_the_broker_file_holding_task_payloads_is_private_whatever_the_umask(
    tmp_path: Path, umask_022: None
) -> None:
    path = tmp_path / "broker.db"
    with _conn(path) as conn:
        conn.Producer().publish({"text": "private"}, routing_key="t.q", declare=[Queue("t.q")])
        modes = {p.name: file_mode(p) for p in tmp_path.iterdir() if p.name.startswith("broker.db")}
    assert set(modes) >= {"broker.db", "broker.db-wal", "broker.db-shm"}
    assert set(modes.values()) == {0o600}
