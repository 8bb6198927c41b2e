from __future__ import annotations

import json

from sqlalchemy import func, select

from microclaw.core.senders import load_sender_allowlist
from microclaw.pipeline.inbound import ingest, ingest_and_kick
from microclaw.store import audit, groups
from microclaw.store.db import read_tx
from microclaw.store.models import Chat, Message
from tests.helpers import envelope, register


def count_messages(engine) -> int:
    with read_tx(engine) as conn:
        return conn.execute(select(func.count()).select_from(Message.__table__)).scalar_one()


def test_same_message_id_twice_stores_one_row_and_kicks_once(engine) -> None:
    register(engine, "fake:g1", requires_trigger=False)
    env = envelope("fake:g1", "hello", message_id="fake:g1:42")
    first = ingest(engine, env)
    second = ingest(engine, env)
    assert (first.status, first.kick, second.status, second.kick) == ("stored", True, "duplicate", False)
    assert count_messages(engine) == 1


def test_kicks_are_coalesced_until_the_group_is_picked_up(engine) -> None:
    register(engine, "fake:g1", requires_trigger=False)
    kicks: list[str] = []
    ingest_and_kick(engine, envelope("fake:g1", "a"), kicks.append)
    ingest_and_kick(engine, envelope("fake:g1", "b"), kicks.append)
    assert kicks == ["fake:g1"]
    with read_tx(engine) as conn:
        assert groups.get_state(conn, "fake:g1").kick_requested_ms is not None


def test_seq_is_monotonic_across_chats(engine) -> None:
    register(engine, "fake:a", requires_trigger=False)
    register(engine, "fake:b", requires_trigger=False)
    seqs = [ingest(engine, envelope(chat, "x")).seq for chat in ("fake:a", "fake:b", "fake:a")]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


def test_unregistered_chat_keeps_metadata_only(engine) -> None:
    result = ingest(engine, envelope("fake:stranger", "hi"))
    assert result.status == "unregistered" and not result.kick
    assert count_messages(engine) == 0
    with read_tx(engine) as conn:
        assert conn.execute(select(Chat.__table__.c.jid)).scalars().all() == ["fake:stranger"]


def test_kick_publish_failure_keeps_message(engine) -> None:
    register(engine, "fake:g1", requires_trigger=False)

    def broken(_chat: str) -> None:
        raise OSError("broker down")

    assert ingest_and_kick(engine, envelope("fake:g1", "hi"), broken).status == "stored"
    assert count_messages(engine) == 1


def test_drop_mode_discards_and_audits(engine, tmp_path) -> None:
    register(engine, "fake:g1")
    path = tmp_path / "allow.json"
    path.write_text(json.dumps({"default": {"allow": ["boss"], "mode": "drop"}, "chats": {}}))
    loader = lambda: load_sender_allowlist(path)  # noqa: E731
    assert ingest(engine, envelope("fake:g1", "spam", sender="rando"), allowlist=loader).status == "dropped"
    assert (
        ingest(engine, envelope("fake:g1", "mine", sender="rando", is_from_me=True), allowlist=loader).status
        == "stored"
    )
    assert ingest(engine, envelope("fake:g1", "ok", sender="boss"), allowlist=loader).status == "stored"
    assert count_messages(engine) == 2
    with read_tx(engine) as conn:
        rows = audit.recent(conn, kind="message.dropped")
    assert len(rows) == 1 and rows[0]["decision"] == "drop"
