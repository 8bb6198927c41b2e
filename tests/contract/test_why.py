"""`microclaw-host why` and `replies`: each message's story from the database, on the real router.

In-process like test_group_processing.py: real SQLite, the real inbound, router and delivery
code, a fake connector. Each test makes one kind of story happen and asks `explain` to tell it.
"""

from __future__ import annotations

import asyncio

import pytest

from microclaw.core.senders import AllowEntry, SenderAllowlist
from microclaw.pipeline.delivery import deliver_chat
from microclaw.pipeline.inbound import ingest
from microclaw.pipeline.router import process_group
from microclaw.runtime.replies import ReplyActionError, discard_reply, problem_replies, retry_reply
from microclaw.runtime.why import explain, find
from microclaw.store import audit
from microclaw.store.db import read_tx
from tests.helpers import delivery_deps, envelope, fake_connector, outbox_rows, register, router_deps


def test_a_message_without_the_trigger_is_explained_as_not_triggered(engine, tmp_path) -> None:
    register(engine, "fake:team")
    ingest(engine, envelope("fake:team", "just chatting", message_id="fake:team:1"))
    process_group(router_deps(engine, tmp_path), "fake:team")
    story = explain(engine, "fake:team:1")
    assert story.outcome == "not_triggered"
    assert "no trigger" in story.verdict and "@Andy" in story.verdict
    assert "@Andy" in (story.next_step or "")
    assert any(s.what.startswith("stored: seq") and "via fake" in s.what for s in story.steps)
    assert story.run_ids == []


def test_a_sender_the_allowlist_lets_not_trigger_is_named(engine, tmp_path) -> None:
    register(engine, "fake:team")
    allow = SenderAllowlist(default=AllowEntry(allow=("boss",), mode="trigger"))
    ingest(engine, envelope("fake:team", "@Andy do it", sender="intern", message_id="fake:team:2"))
    deps = router_deps(engine, tmp_path)
    deps.allowlist = lambda: allow
    process_group(deps, "fake:team")
    story = explain(engine, "fake:team:2")
    assert story.outcome == "not_triggered"
    assert "sender may not trigger" in story.verdict
    assert "'intern'" in (story.next_step or "")


def test_a_message_dropped_by_the_sender_allowlist_is_explained(engine, tmp_path) -> None:
    register(engine, "fake:team")
    allow = SenderAllowlist(default=AllowEntry(allow=("boss",), mode="drop"))
    result = ingest(
        engine,
        envelope("fake:team", "@Andy hi", sender="stranger", message_id="fake:team:3"),
        allowlist=lambda: allow,
    )
    assert result.status == "dropped"
    story = explain(engine, "fake:team:3")
    assert story.outcome == "dropped"
    assert "sender not allowed" in story.verdict
    assert "allow" in (story.next_step or "")


def test_an_answered_message_tells_its_run_spend_and_delivered_reply(engine, tmp_path) -> None:
    register(engine, "fake:team")
    ingest(engine, envelope("fake:team", "@Andy hello there", message_id="fake:team:4"))
    process_group(router_deps(engine, tmp_path), "fake:team")
    with asyncio.Runner() as runner:
        assert (
            deliver_chat(delivery_deps(engine, [fake_connector(tmp_path)], runner), "fake:team") == "drained"
        )
    story = explain(engine, "fake:team:4")
    assert story.outcome == "answered"
    assert len(story.run_ids) == 1 and len(story.outbox_ids) == 1
    text = "\n".join(s.what for s in story.steps)
    assert f"run {story.run_ids[0]} done" in text
    assert "model call(s)" in text and "tokens in" in text
    assert f"reply #{story.outbox_ids[0]} delivered" in text
    assert find(engine, "fake:team", "HELLO THERE") == ["fake:team:4"]


def test_a_failed_reply_is_explained_then_retried_and_discarded_with_audit(engine, tmp_path) -> None:
    register(engine, "fake:team")
    ingest(engine, envelope("fake:team", "@Andy ping", message_id="fake:team:5"))
    process_group(router_deps(engine, tmp_path), "fake:team")
    broken = fake_connector(tmp_path, permanent_chats=("fake:team",))
    with asyncio.Runner() as runner:
        deliver_chat(delivery_deps(engine, [broken], runner), "fake:team")
    story = explain(engine, "fake:team:5")
    assert story.outcome == "reply_failed"
    assert "chat fake:team not found" in story.verdict
    (reply_id,) = story.outbox_ids
    assert f"replies retry {reply_id}" in (story.next_step or "")
    assert [r["id"] for r in problem_replies(engine)] == [reply_id]

    # retry: pending and due again, audited; a delivery with a working connector then sends it
    assert retry_reply(engine, reply_id) == "fake:team"
    assert [r.status for r in outbox_rows(engine)] == ["pending"]
    with asyncio.Runner() as runner:
        deliver_chat(delivery_deps(engine, [fake_connector(tmp_path)], runner), "fake:team")
    assert explain(engine, "fake:team:5").outcome == "answered"
    with pytest.raises(ReplyActionError, match="delivered"):
        retry_reply(engine, reply_id)  # only failed/uncertain rows; nothing changes
    with pytest.raises(ReplyActionError, match="no reply #999"):
        discard_reply(engine, 999)
    with read_tx(engine) as conn:
        kinds = [r["kind"] for r in audit.recent(conn, limit=10)]
    assert "outbox.retried" in kinds


def test_discard_closes_a_failed_reply(engine, tmp_path) -> None:
    register(engine, "fake:team")
    ingest(engine, envelope("fake:team", "@Andy ping", message_id="fake:team:6"))
    process_group(router_deps(engine, tmp_path), "fake:team")
    with asyncio.Runner() as runner:
        deliver_chat(
            delivery_deps(engine, [fake_connector(tmp_path, permanent_chats=("fake:team",))], runner),
            "fake:team",
        )
    (reply_id,) = explain(engine, "fake:team:6").outbox_ids
    discard_reply(engine, reply_id)
    assert [r.status for r in outbox_rows(engine)] == ["discarded"]
    assert problem_replies(engine) == []
    with read_tx(engine) as conn:
        assert audit.recent(conn, kind="outbox.discarded", limit=1)[0]["detail"]["was"] == "failed"


def test_a_failed_run_says_when_it_is_retried(engine, tmp_path) -> None:
    from microclaw.errors import TransientProviderError

    def down(request, on_step):
        raise TransientProviderError("model down")

    register(engine, "fake:team")
    ingest(engine, envelope("fake:team", "@Andy ping", message_id="fake:team:7"))
    process_group(router_deps(engine, tmp_path, agent=down), "fake:team")
    story = explain(engine, "fake:team:7")
    assert story.outcome == "retrying"
    assert "model down" in story.verdict and "retry 1" in story.verdict


def test_a_stored_message_the_router_has_not_seen_is_waiting_and_unknown_ids_are_not_found(
    engine, tmp_path
) -> None:
    register(engine, "fake:team")
    ingest(engine, envelope("fake:team", "@Andy later", message_id="fake:team:8"))
    story = explain(engine, "fake:team:8")
    assert story.outcome == "waiting"
    assert "router worker" in (story.next_step or "")
    assert explain(engine, "fake:nope:1").outcome == "not_found"
