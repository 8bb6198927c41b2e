"""The Telegram connector with the real python-telegram-bot against a fake Bot API on loopback."""

from __future__ import annotations

import asyncio
import logging
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import update

from microclaw.connectors.telegram import TelegramConnector
from microclaw.errors import PermanentConnectorError, TransientConnectorError
from microclaw.pipeline.delivery import deliver_chat
from microclaw.store import outbox
from microclaw.store.db import write_tx
from microclaw.store.models import OutboxEntry
from tasks.typing import show_typing
from tests.helpers import delivery_deps, fake_connector, outbox_rows, register
from tests.integration.connectors.conftest import stop, stored, supervise, until
from tests.integration.connectors.fake_telegram import BOT_USERNAME, FakeTelegram

GROUP = -1001234567890
JID = f"tg:{GROUP}"


def connector(fake: FakeTelegram, **options: Any) -> TelegramConnector:
    return TelegramConnector(
        fake.token,
        assistant_name="Andy",
        base_url=fake.base_url,
        base_file_url=fake.base_file_url,
        poll_timeout_s=1,
        **{"per_chat_interval_s": 0.05, **options},
    )


def mention(text: str, username: str = BOT_USERNAME) -> list[dict[str, object]]:
    start = text.index(f"@{username}")
    return [{"type": "mention", "offset": start, "length": len(username) + 1}]


# --- inbound ----------------------------------------------------------------------------------


def test_inbound_messages_become_envelopes_and_commands_are_answered(
    fake_telegram, make_host, engine
) -> None:
    register(engine, JID)
    host = make_host()
    tg = connector(fake_telegram)
    fake_telegram.push_message(GROUP, "plain chatter")
    text = f"hey @{BOT_USERNAME} what's up"
    fake_telegram.push_message(GROUP, text, entities=mention(text))
    fake_telegram.push_message(
        GROUP,
        "@Andy already triggered @andy_test_bot",
        entities=mention("@Andy already triggered @andy_test_bot"),
    )
    photo = [{"file_id": "p", "file_unique_id": "p1", "width": 1, "height": 1}]
    fake_telegram.push_message(GROUP, photo=photo, caption="look at this")
    fake_telegram.push_message(GROUP, voice={"file_id": "v", "file_unique_id": "v1", "duration": 3})
    fake_telegram.push_message(
        GROUP, document={"file_id": "d", "file_unique_id": "d1", "file_name": "report.pdf"}
    )
    original = fake_telegram.push_message(GROUP, "the original", first_name="Bob", from_id=502)["message"]
    fake_telegram.push_message(GROUP, "a reply", reply_to=original)
    fake_telegram.push_message(GROUP, "/ping")
    fake_telegram.push_message(GROUP, f"/chatid@{BOT_USERNAME}")
    fake_telegram.push_message(42, "hi in private", chat_type="private", first_name="Carol", from_id=42)

    async def scenario() -> None:
        task = await supervise(host, tg)
        await until(lambda: len(host.seen) == 9 and len(fake_telegram.sent) == 2, 10, "every update")
        await until(lambda: not fake_telegram.pending, 5, "the offset to confirm everything delivered")
        await stop(host, task, tg)

    asyncio.run(scenario())
    rows = stored(engine, JID)
    assert [r.content for r in rows] == [
        "plain chatter",
        f"@Andy hey @{BOT_USERNAME} what's up",
        "@Andy already triggered @andy_test_bot",
        "[Photo] look at this",
        "[Voice message]",
        "[Document: report.pdf]",
        "the original",
        "a reply",
    ]
    assert rows[0].id.startswith(f"{JID}:") and rows[0].sender == "501" and rows[0].sender_name == "Alice"
    reply = rows[-1]
    assert (reply.reply_to_message_id, reply.reply_to_message_content, reply.reply_to_sender_name) == (
        rows[-2].id,
        "the original",
        "Bob",
    )
    dm = host.seen[-1]
    assert (dm.chat_id, dm.payload.chat_name, dm.payload.is_group) == ("tg:42", "Carol", False)
    assert stored(engine, "tg:42") == []  # not registered: metadata only
    answers = [s.text for s in fake_telegram.sent]
    assert answers[0] == "Andy is online."
    assert answers[1] == f"Chat ID: tg:{GROUP}\nName: Test group\nType: supergroup"
    assert host.kicks == [JID]  # one coalesced wake-up


def test_a_failed_store_is_not_acknowledged_and_the_update_comes_back(
    fake_telegram, make_host, engine
) -> None:
    """Crash between receiving and storing: the offset never moves past the update."""
    register(engine, JID)
    host = make_host(failures=1)
    tg = connector(fake_telegram)
    update = fake_telegram.push_message(GROUP, "@Andy do not lose me")

    async def scenario() -> None:
        task = await supervise(host, tg)
        await until(lambda: stored(engine, JID), 10, "the message after the listener restarted")
        await until(lambda: not fake_telegram.pending, 5, "the confirmation")
        await stop(host, task, tg)

    asyncio.run(scenario())
    assert [e.message_id for e in host.seen] == [f"{JID}:{update['message']['message_id']}"] * 2
    assert [r.content for r in stored(engine, JID)] == ["@Andy do not lose me"]
    offsets = [int(params.get("offset") or 0) for _, params, _ in fake_telegram.calls("getUpdates")]
    assert offsets[0] == 0 and update["update_id"] + 1 in offsets  # confirmed only after storing


def test_platform_redelivery_stores_one_message(fake_telegram, make_host, engine) -> None:
    """Stored, then the process dies before Telegram saw the confirmation: the next process
    (offset unknown) gets the same update again, and the store keeps one row."""
    register(engine, JID)
    fake_telegram.ignore_next_confirm()
    fake_telegram.push_message(GROUP, "@Andy exactly once")

    async def run_once() -> None:
        host, tg = make_host(), connector(fake_telegram)
        polls = len(fake_telegram.calls("getUpdates"))
        task = await supervise(host, tg)
        await until(lambda: host.seen, 10, "the update")
        # The poll after the delivery carries the confirming offset.
        await until(lambda: len(fake_telegram.calls("getUpdates")) >= polls + 2, 5, "the confirming poll")
        await stop(host, task, tg)

    asyncio.run(run_once())
    assert fake_telegram.pending  # the confirmation was lost with the "dead" process
    asyncio.run(run_once())
    assert not fake_telegram.pending
    assert [r.content for r in stored(engine, JID)] == ["@Andy exactly once"]


def test_listener_reconnects_after_the_server_drops(fake_telegram, make_host, engine) -> None:
    register(engine, JID)
    host = make_host()
    tg = connector(fake_telegram)

    async def scenario() -> None:
        task = await supervise(host, tg)
        fake_telegram.push_message(GROUP, "before")
        await until(lambda: len(stored(engine, JID)) == 1, 10, "the first message")
        await asyncio.to_thread(fake_telegram.restart, 0.3)  # every connection dropped, port down
        fake_telegram.push_message(GROUP, "after")
        await until(lambda: len(stored(engine, JID)) == 2, 15, "the message after the reconnect")
        await stop(host, task, tg)

    asyncio.run(scenario())
    assert [r.content for r in stored(engine, JID)] == ["before", "after"]


# --- outbound ---------------------------------------------------------------------------------


def test_long_replies_are_split_at_4096(fake_telegram, engine, runner) -> None:
    tg = connector(fake_telegram)
    text = "\n".join(f"line {i:05d} " + "x" * 90 for i in range(100))  # ~10 000 characters
    with write_tx(engine) as conn:
        outbox.add(conn, key="run:1:reply", chat_jid=JID, text=text)
    assert deliver_chat(delivery_deps(engine, [tg], runner), JID) == "drained"
    sent = fake_telegram.sent
    assert len(sent) == 3 and all(len(s.text) <= 4096 for s in sent)
    assert "\n".join(s.text for s in sent) == text
    assert outbox_rows(engine)[0].platform_message_id == ",".join(str(s.message_id) for s in sent)
    runner.run(tg.close())


def test_sends_respect_the_per_chat_rate(fake_telegram, runner) -> None:
    interval = 0.3
    tg = connector(fake_telegram, per_chat_interval_s=interval)

    async def burst() -> None:
        await asyncio.gather(
            *(
                tg.send(chat, f"{chat} {i}", idempotency_key=f"{chat}:{i}")
                for i in range(4)
                for chat in (JID, "tg:7")
            )
        )

    runner.run(burst())
    for chat in (GROUP, 7):
        times = [s.at for s in fake_telegram.sent if s.chat_id == chat]
        assert len(times) == 4
        # At most one message per chat in any window shorter than the interval (server clock).
        assert all(later - earlier >= interval * 0.8 for earlier, later in pairwise(times))
    first_a = next(s.at for s in fake_telegram.sent if s.chat_id == GROUP)
    first_b = next(s.at for s in fake_telegram.sent if s.chat_id == 7)
    assert abs(first_a - first_b) < interval  # one chat's limit does not hold up another
    runner.run(tg.close())


def test_sends_respect_the_global_rate(fake_telegram, runner) -> None:
    tg = connector(fake_telegram, global_rate_per_s=4)

    async def burst() -> None:
        await asyncio.gather(*(tg.send(f"tg:{100 + i}", "hi", idempotency_key=str(i)) for i in range(10)))

    runner.run(burst())
    times = sorted(s.at for s in fake_telegram.sent)
    assert len(times) == 10
    # Leaky bucket of 4/s: any window of 0.5 s holds at most 4 (burst) + 2 (drained) sends.
    assert max(sum(1 for t in times if start <= t < start + 0.5) for start in times) <= 6
    runner.run(tg.close())


def test_flood_control_429_is_transient_with_retry_after_and_retried(fake_telegram, engine, runner) -> None:
    now = [1000.0]
    tg = connector(fake_telegram, clock=lambda: now[0])
    fake_telegram.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    with pytest.raises(TransientConnectorError) as caught:
        runner.run(tg.send(JID, "x", idempotency_key="k"))
    assert caught.value.retry_after == 1 and caught.value.chat_id == JID
    calls = len(fake_telegram.calls("sendMessage"))
    with pytest.raises(TransientConnectorError) as again:
        runner.run(tg.send(JID, "x", idempotency_key="k"))  # still blocked: not even attempted
    assert 0 < again.value.retry_after <= 1 and len(fake_telegram.calls("sendMessage")) == calls

    # Through the outbound path: waits Telegram's retry_after, then delivers once.
    other = "tg:-55"
    fake_telegram.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    with write_tx(engine) as conn:
        outbox.add(conn, key="run:2:reply", chat_jid=other, text="after the flood")
    deps = delivery_deps(engine, [tg], runner, retry_base_s=30)
    assert deliver_chat(deps, other) == "waiting"
    row = outbox_rows(engine)[0]
    assert row.status == "pending" and 900 <= row.next_attempt_at_ms - row.created_at_ms <= 5000
    now[0] += 1.05  # Telegram's retry_after has passed
    with write_tx(engine) as conn:
        conn.execute(update(OutboxEntry.__table__).values(next_attempt_at_ms=0))
    assert deliver_chat(deps, other) == "drained"
    assert [s.text for s in fake_telegram.sent if s.chat_id == -55] == ["after the flood"]
    runner.run(tg.close())


@pytest.mark.parametrize(
    ("status", "description"),
    [
        (403, "Forbidden: bot was blocked by the user"),
        (403, "Forbidden: bot was kicked from the supergroup chat"),
        (400, "Bad Request: chat not found"),
    ],
)
def test_permanent_platform_errors(fake_telegram, engine, runner, status: int, description: str) -> None:
    tg = connector(fake_telegram)
    fake_telegram.fail_chat(GROUP, status, description)
    with pytest.raises(PermanentConnectorError, match=f"(?i){description.split(': ', 1)[1]}"):
        runner.run(tg.send(JID, "x", idempotency_key="k"))
    with write_tx(engine) as conn:
        outbox.add(conn, key="run:1:reply", chat_jid=JID, text="never arrives")
    assert deliver_chat(delivery_deps(engine, [tg], runner), JID) == "drained"
    assert [r.status for r in outbox_rows(engine)] == ["failed"]  # recorded, not retried
    runner.run(tg.close())


def test_migrated_group_names_its_new_address(fake_telegram, runner) -> None:
    tg = connector(fake_telegram)
    fake_telegram.fail("sendMessage", 400, "Bad Request: group chat was upgraded", migrate_to_chat_id=-1009)
    with pytest.raises(PermanentConnectorError, match="tg:-1009"):
        runner.run(tg.send("tg:-5", "x", idempotency_key="k"))
    runner.run(tg.close())


def test_typing_indicator_through_the_outbound_task(fake_telegram, runner, tmp_path) -> None:
    tg = connector(fake_telegram)
    assert show_typing([tg], runner, JID) == "sent"
    assert fake_telegram.actions == [(GROUP, "typing")]
    fake_telegram.fail_chat(-9, 403, "Forbidden: bot was kicked from the group chat")
    assert show_typing([tg], runner, "tg:-9") == "failed"
    assert show_typing([tg], runner, "zz:1") == "unsupported"
    # A platform without an indicator keeps the base's no-op hook.
    assert show_typing([tg, fake_connector(tmp_path)], runner, "fake:1") == "unsupported"
    runner.run(tg.close())


def test_the_token_never_reaches_the_logs(fake_telegram, runner, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    tg = connector(fake_telegram)
    runner.run(tg.send(JID, "hello", idempotency_key="k"))
    fake_telegram.fail("sendMessage", 401, "Unauthorized")
    with pytest.raises(PermanentConnectorError) as caught:
        runner.run(tg.send(JID, "again", idempotency_key="k2"))
    runner.run(tg.close())
    wrong = TelegramConnector("999:wrong-token", assistant_name="Andy", base_url=fake_telegram.base_url)
    with pytest.raises(PermanentConnectorError) as rejected:
        runner.run(wrong.send(JID, "x", idempotency_key="k3"))  # getMe fails: InvalidToken quotes it
    runner.run(wrong.close())
    messages = [r.getMessage() for r in caplog.records]
    assert messages and not [m for m in messages if fake_telegram.token in m or "999:wrong-token" in m]
    assert fake_telegram.token not in str(caught.value) and "wrong-token" not in str(rejected.value)
