"""store.outbox: idempotent replies, per-chat order and what the sweeper looks for."""

from __future__ import annotations

from sqlalchemy import Engine

from microclaw.store import outbox
from microclaw.store.db import read_tx, write_tx


def test_a_key_is_added_once(engine: Engine) -> None:
    with write_tx(engine) as conn:
        assert outbox.add(conn, key="run:1:reply", chat_jid="fake:a", text="hi", run_id=1)
        assert not outbox.add(conn, key="run:1:reply", chat_jid="fake:a", text="other", run_id=1)
        head = outbox.head(conn, "fake:a")
    assert head is not None and (head.text, head.status, head.attempts) == ("hi", "pending", 0)


def test_counts_per_run_and_per_key_prefix(engine: Engine) -> None:
    with write_tx(engine) as conn:
        outbox.add(conn, key="run:1:msg:1", chat_jid="fake:a", text="a", run_id=1)
        outbox.add(conn, key="run:1:msg:2", chat_jid="fake:a", text="b", run_id=1)
        outbox.add(conn, key="run:1:reply", chat_jid="fake:a", text="c", run_id=1)
        outbox.add(conn, key="run:2:msg:1", chat_jid="fake:a", text="d", run_id=2)
        assert outbox.count_for_run(conn, 1) == 3
        assert outbox.count_keyed(conn, 1, "run:1:msg:") == 2
        assert outbox.count_for_run(conn, 3) == 0


def test_head_is_the_oldest_unfinished_row_of_the_chat(engine: Engine) -> None:
    with write_tx(engine) as conn:
        for key in ("k1", "k2", "k3"):
            outbox.add(conn, key=key, chat_jid="fake:a", text=key)
        first = outbox.head(conn, "fake:a")
        assert first is not None
        outbox.mark(conn, first.id, "delivered", delivered_at_ms=5, platform_message_id="p1")
        second = outbox.head(conn, "fake:a")
        assert second is not None and second.idempotency_key == "k2"
        outbox.mark(conn, second.id, "sending", attempts=1, claimed_at_ms=6)
        assert outbox.head(conn, "fake:a") == outbox.OutboxRow(
            second.id, "k2", "fake:a", "k2", "sending", 1, 0
        )
        assert outbox.counts(conn) == {"delivered": 1, "sending": 1, "pending": 1}
        assert outbox.head(conn, "fake:none") is None


def test_due_and_stranded_chats(engine: Engine) -> None:
    with write_tx(engine) as conn:
        outbox.add(conn, key="fresh", chat_jid="fake:fresh", text="x")
        outbox.add(conn, key="old", chat_jid="fake:old", text="x")
        outbox.add(conn, key="retry", chat_jid="fake:retry", text="x")
        outbox.add(conn, key="later", chat_jid="fake:later", text="x")
        outbox.add(conn, key="stuck", chat_jid="fake:stuck", text="x")
        ids = {
            r.idempotency_key: r.id
            for r in (outbox.head(conn, f"fake:{k}") for k in ("old", "retry", "later", "stuck"))
            if r
        }
        now = 10_000_000_000_000  # far after every created_at_ms above
        conn.exec_driver_sql(f"UPDATE outbox SET created_at_ms = {now - 5}")
        outbox.mark(conn, ids["old"], "pending", created_at_ms=now - 120_000)
        outbox.mark(conn, ids["retry"], "pending", next_attempt_at_ms=now - 1)
        outbox.mark(conn, ids["later"], "pending", next_attempt_at_ms=now + 1)
        outbox.mark(conn, ids["stuck"], "sending", claimed_at_ms=now - 120_000)
    with read_tx(engine) as conn:
        assert sorted(outbox.chats_with_due(conn, now, stale_after_ms=60_000)) == ["fake:old", "fake:retry"]
        assert outbox.chats_with_stranded(conn, now - 60_000) == ["fake:stuck"]
