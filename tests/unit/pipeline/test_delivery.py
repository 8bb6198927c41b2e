"""Outbox delivery in-process, through the real fake connector and its SQLite mailbox."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from sqlalchemy import update

from microclaw.pipeline.delivery import deliver_chat, split_text
from microclaw.store import audit, outbox
from microclaw.store.db import read_tx, write_tx
from microclaw.store.models import OutboxEntry
from tests.helpers import delivery_deps, fake_connector, outbox_rows


@pytest.fixture
def runner():
    with asyncio.Runner() as r:
        yield r


def queue(engine, chat: str, *texts: str) -> None:
    with write_tx(engine) as conn:
        for i, text in enumerate(texts):
            outbox.add(conn, key=f"k:{chat}:{text}:{i}", chat_jid=chat, text=text)


def test_delivers_in_order_exactly_once(engine, tmp_path, runner) -> None:
    fake = fake_connector(tmp_path)
    queue(engine, "fake:c", "one", "two", "three")
    deps = delivery_deps(engine, [fake], runner)
    assert deliver_chat(deps, "fake:c") == "drained"
    assert deliver_chat(deps, "fake:c") == "drained"  # a duplicate deliver task is harmless
    assert [m.text for m in fake.mailbox.after(0, chat_id="fake:c")] == ["one", "two", "three"]
    assert {r.status for r in outbox_rows(engine)} == {"delivered"}


def test_adding_the_same_key_twice_keeps_one_row(engine) -> None:
    with write_tx(engine) as conn:
        assert outbox.add(conn, key="run:1:reply", chat_jid="fake:c", text="x")
        assert not outbox.add(conn, key="run:1:reply", chat_jid="fake:c", text="x")
    assert len(outbox_rows(engine)) == 1


def test_transient_errors_back_off_and_hold_the_queue(engine, tmp_path, runner) -> None:
    fake = fake_connector(tmp_path, transient_failures=1)
    queue(engine, "fake:c", "first", "second")
    deps = delivery_deps(engine, [fake], runner, retry_base_s=30)
    assert deliver_chat(deps, "fake:c") == "waiting"
    rows = outbox_rows(engine)
    assert [(r.status, r.attempts) for r in rows] == [("pending", 1), ("pending", 0)]
    assert rows[0].next_attempt_at_ms > rows[0].created_at_ms
    assert fake.mailbox.after(0, chat_id="fake:c") == []  # "second" never overtakes "first"
    with write_tx(engine) as conn:
        conn.execute(update(OutboxEntry.__table__).values(next_attempt_at_ms=0))
    assert deliver_chat(deps, "fake:c") == "drained"
    assert [m.text for m in fake.mailbox.after(0, chat_id="fake:c")] == ["first", "second"]


def test_permanent_error_is_recorded_and_not_retried(engine, tmp_path, runner) -> None:
    fake = fake_connector(tmp_path, permanent_chats=("fake:gone",))
    queue(engine, "fake:gone", "hello?")
    assert deliver_chat(delivery_deps(engine, [fake], runner), "fake:gone") == "drained"
    (row,) = outbox_rows(engine)
    assert (row.status, row.attempts) == ("failed", 1)
    assert "not found" in row.last_error
    with read_tx(engine) as conn:
        assert audit.recent(conn, kind="outbox.failed")[0]["chat_jid"] == "fake:gone"


def test_attempts_are_bounded(engine, tmp_path, runner) -> None:
    fake = fake_connector(tmp_path, transient_failures=100)
    queue(engine, "fake:c", "never")
    deps = delivery_deps(engine, [fake], runner, max_attempts=3)
    for _ in range(3):
        with write_tx(engine) as conn:
            conn.execute(update(OutboxEntry.__table__).values(next_attempt_at_ms=0))
        deliver_chat(deps, "fake:c")
    (row,) = outbox_rows(engine)
    assert (row.status, row.attempts) == ("failed", 3)


def test_interrupted_send_is_resent_only_when_the_platform_deduplicates(engine, tmp_path, runner) -> None:
    fake = fake_connector(tmp_path)
    queue(engine, "fake:c", "was in flight")
    (row,) = outbox_rows(engine)
    # The crashed sender got as far as the platform, then died before marking the row.
    asyncio.run(fake.send("fake:c", "was in flight", idempotency_key=row.idempotency_key))
    with write_tx(engine) as conn:
        outbox.mark(conn, row.id, "sending", attempts=1, claimed_at_ms=0)
    deliver_chat(delivery_deps(engine, [fake], runner), "fake:c")
    assert [m.text for m in fake.mailbox.after(0, chat_id="fake:c")] == ["was in flight"]
    assert outbox_rows(engine)[0].status == "delivered"

    class Blind(type(fake)):
        idempotent_send: ClassVar[bool] = False

    blind = Blind(fake.mailbox)
    queue(engine, "fake:d", "maybe sent")
    row = outbox_rows(engine)[-1]
    with write_tx(engine) as conn:
        outbox.mark(conn, row.id, "sending", attempts=1, claimed_at_ms=0)
    deliver_chat(delivery_deps(engine, [blind], runner), "fake:d")
    assert outbox_rows(engine)[-1].status == "uncertain"
    assert blind.mailbox.after(0, chat_id="fake:d") == []


def test_address_without_connector_fails_cleanly(engine, tmp_path, runner) -> None:
    queue(engine, "tg:123", "hi")
    deliver_chat(delivery_deps(engine, [fake_connector(tmp_path)], runner), "tg:123")
    assert outbox_rows(engine)[0].status == "failed"


def test_long_replies_are_split_at_the_platform_limit(engine, tmp_path, runner) -> None:
    fake = fake_connector(tmp_path)
    text = "\n".join(f"line {i:04d} " + "x" * 90 for i in range(100))  # ~10 KB
    queue(engine, "fake:c", text)
    deliver_chat(delivery_deps(engine, [fake], runner), "fake:c")
    chunks = [m.text for m in fake.mailbox.after(0, chat_id="fake:c")]
    assert len(chunks) == 3 and all(len(c) <= 4096 for c in chunks)
    assert "\n".join(chunks) == text


def test_split_text_edges() -> None:
    assert split_text("", 10) == [""]
    assert split_text("abc", 10) == ["abc"]
    assert split_text("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]
    assert split_text("aaaa\nbbbb\ncccc", 10) == ["aaaa\nbbbb", "cccc"]
