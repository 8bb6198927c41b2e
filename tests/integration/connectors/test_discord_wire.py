"""The Discord connector with the real discord.py against a fake REST API + gateway on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from microclaw.connectors.discord import DiscordConnector
from microclaw.connectors.state import ConnectorState
from microclaw.errors import PermanentConnectorError, TransientConnectorError
from microclaw.pipeline.delivery import deliver_chat
from microclaw.store import outbox
from microclaw.store.db import write_tx
from tasks.typing import show_typing
from tests.helpers import delivery_deps, outbox_rows, register
from tests.integration.connectors.conftest import stop, stored, supervise, until
from tests.integration.connectors.fake_discord import BOT_ID, FakeDiscord

IMAGE = {
    "id": "1",
    "filename": "cat.png",
    "size": 10,
    "url": "http://127.0.0.1/cat.png",
    "proxy_url": "http://127.0.0.1/cat.png",
    "content_type": "image/png",
}


def connector(fake: FakeDiscord, tmp_path: Path) -> DiscordConnector:
    return DiscordConnector(
        fake.token,
        assistant_name="Andy",
        state=ConnectorState(tmp_path / "discord-cursors.db"),
        guild_ready_timeout_s=0.05,
    )


# --- inbound ----------------------------------------------------------------------------------


def test_inbound_mentions_attachments_replies_and_bots(fake_discord, make_host, engine, tmp_path) -> None:
    general = fake_discord.add_channel("general")
    dm = fake_discord.add_channel("dm", dm=True)
    jid = f"dc:{general}"
    register(engine, jid)
    host = make_host()
    dc = connector(fake_discord, tmp_path)

    async def scenario() -> None:
        task = await supervise(host, dc)
        await until(lambda: fake_discord.live_sessions, 10, "the gateway session")
        fake_discord.push_message(general, "just chatting")
        fake_discord.push_message(general, f"<@{BOT_ID}> what's the weather?", mention_bot=True)
        fake_discord.push_message(general, f"@Andy <@!{BOT_ID}> already addressed", mention_bot=True)
        original = fake_discord.push_message(general, "the original", author="Bob", author_id=702)
        fake_discord.push_message(general, "look", attachments=[IMAGE], reply_to=int(original["id"]))
        fake_discord.push_message(general, "beep", bot=True, author="OtherBot", author_id=703)
        fake_discord.push_message(
            dm, "", attachments=[{**IMAGE, "filename": "notes.txt", "content_type": None}]
        )
        await until(lambda: len(host.seen) == 6, 10, "six human messages")
        await stop(host, task, dc)

    asyncio.run(scenario())
    rows = stored(engine, jid)
    assert [r.content for r in rows] == [
        "just chatting",
        "@Andy what's the weather?",
        "@Andy  already addressed",
        "the original",
        "look\n[Image: cat.png]",
    ]
    first = rows[0]
    assert (
        first.id.startswith(f"{jid}:")
        and first.sender == "700000000000000001"
        and first.sender_name == "Alice"
    )
    assert (
        rows[-1].reply_to_message_id,
        rows[-1].reply_to_message_content,
        rows[-1].reply_to_sender_name,
    ) == (
        rows[-2].id,
        "the original",
        "Bob",
    )
    guild_msg, dm_msg = host.seen[0], host.seen[-1]
    assert (guild_msg.payload.chat_name, guild_msg.payload.is_group) == ("Test Server #general", True)
    assert (dm_msg.chat_id, dm_msg.payload.text, dm_msg.payload.is_group) == (
        f"dc:{dm}",
        "[File: notes.txt]",
        False,
    )
    assert host.kicks == [jid]


def test_platform_redelivery_stores_one_message(fake_discord, make_host, engine, tmp_path) -> None:
    general = fake_discord.add_channel()
    jid = f"dc:{general}"
    register(engine, jid)
    host = make_host()
    dc = connector(fake_discord, tmp_path)

    async def scenario() -> None:
        task = await supervise(host, dc)
        await until(lambda: fake_discord.live_sessions, 10, "the gateway session")
        message = fake_discord.push_message(general, "@Andy once")
        await until(lambda: stored(engine, jid), 10, "the message")
        fake_discord.redispatch(message)
        fake_discord.push_message(general, "next")
        await until(lambda: len(stored(engine, jid)) == 2, 10, "the next message")
        await stop(host, task, dc)

    asyncio.run(scenario())
    assert [r.content for r in stored(engine, jid)] == ["@Andy once", "next"]


def test_a_failed_store_is_caught_up_after_the_restart(fake_discord, make_host, engine, tmp_path) -> None:
    """The gateway has no ack: the channel cursor stays before the message until it is stored,
    and the restarted listener reads it back through REST."""
    general = fake_discord.add_channel()
    jid = f"dc:{general}"
    register(engine, jid)
    host = make_host(failures=1)
    dc = connector(fake_discord, tmp_path)

    async def scenario() -> None:
        task = await supervise(host, dc)
        await until(lambda: fake_discord.live_sessions, 10, "the gateway session")
        fake_discord.push_message(general, "@Andy do not lose me")
        await until(lambda: stored(engine, jid), 15, "the message after the listener restarted")
        await stop(host, task, dc)

    asyncio.run(scenario())
    assert [r.content for r in stored(engine, jid)] == ["@Andy do not lose me"]
    assert len(host.seen) == 2 and fake_discord.identifies == 2
    assert any(m == "GET" and r == f"/channels/{general}/messages" for m, r, _ in fake_discord.requests())


def test_messages_sent_while_the_bot_was_down_are_caught_up(
    fake_discord, make_host, engine, tmp_path
) -> None:
    general = fake_discord.add_channel()
    jid = f"dc:{general}"
    register(engine, jid)

    async def run(live: str, count: int, **options: float) -> None:
        host, dc = make_host(), connector(fake_discord, tmp_path)
        dc.guild_ready_timeout_s = options.get("guild_ready_timeout_s", dc.guild_ready_timeout_s)
        task = await supervise(host, dc)
        await until(lambda: fake_discord.live_sessions, 10, "the gateway session")
        fake_discord.push_message(general, live)  # right after READY, before the guilds are in
        await until(lambda: len(stored(engine, jid)) == count, 10, f"{count} stored messages")
        await stop(host, task, dc)

    asyncio.run(run("while up", 1))
    # Down: the gateway never delivers these to anyone; only the channel history has them.
    fake_discord.push_message(general, "missed one", dispatch=False)
    fake_discord.push_message(general, "missed two", dispatch=False)
    asyncio.run(run("live again", 4, guild_ready_timeout_s=0.5))
    assert [r.content for r in stored(engine, jid)] == ["while up", "missed one", "missed two", "live again"]


def test_gateway_reconnects_and_resumes_after_the_server_drops(
    fake_discord, make_host, engine, tmp_path
) -> None:
    general = fake_discord.add_channel()
    jid = f"dc:{general}"
    register(engine, jid)
    host = make_host()
    dc = connector(fake_discord, tmp_path)

    async def scenario() -> None:
        task = await supervise(host, dc)
        await until(lambda: fake_discord.live_sessions, 10, "the gateway session")
        fake_discord.push_message(general, "before")
        await until(lambda: len(stored(engine, jid)) == 1, 10, "the first message")
        await asyncio.to_thread(fake_discord.drop_gateway)
        fake_discord.push_message(general, "while reconnecting")  # replayed on RESUME
        await until(lambda: len(stored(engine, jid)) == 2, 15, "the replayed message")
        fake_discord.push_message(general, "after")
        await until(lambda: len(stored(engine, jid)) == 3, 10, "the message after the resume")
        await stop(host, task, dc)

    asyncio.run(scenario())
    assert [r.content for r in stored(engine, jid)] == ["before", "while reconnecting", "after"]
    assert fake_discord.resumes >= 1 and fake_discord.identifies == 1


# --- outbound ---------------------------------------------------------------------------------


def test_send_works_without_the_gateway_and_splits_at_2000(fake_discord, engine, runner, tmp_path) -> None:
    general = fake_discord.add_channel()
    jid = f"dc:{general}"
    dc = connector(fake_discord, tmp_path)
    text = "\n".join(f"line {i:04d} " + "y" * 60 for i in range(70))  # ~4 800 characters
    with write_tx(engine) as conn:
        outbox.add(conn, key="run:1:reply", chat_jid=jid, text=text)
    assert deliver_chat(delivery_deps(engine, [dc], runner), jid) == "drained"
    sent = fake_discord.sent
    assert len(sent) == 3 and all(len(s.content) <= 2000 for s in sent)
    assert "\n".join(s.content for s in sent) == text
    assert outbox_rows(engine)[0].platform_message_id == ",".join(str(s.message_id) for s in sent)
    assert fake_discord.identifies == 0  # REST only: the outbound worker never opens a gateway
    runner.run(dc.close())


def test_short_429_is_waited_out_and_retried(fake_discord, runner, tmp_path) -> None:
    general = fake_discord.add_channel()
    dc = connector(fake_discord, tmp_path)
    fake_discord.fail(f"POST /channels/{general}/messages", 429, retry_after=0.3)
    runner.run(dc.send(f"dc:{general}", "hello", idempotency_key="k"))
    posts = [r for r in fake_discord.requests("POST") if r[1] == f"/channels/{general}/messages"]
    assert len(posts) == 2 and posts[1][2] - posts[0][2] >= 0.25
    assert [s.content for s in fake_discord.sent] == ["hello"]
    runner.run(dc.close())


def test_long_429_becomes_transient_with_retry_after(fake_discord, engine, runner, tmp_path) -> None:
    general = fake_discord.add_channel()
    jid = f"dc:{general}"
    dc = connector(fake_discord, tmp_path)
    fake_discord.fail(f"POST /channels/{general}/messages", 429, retry_after=120)
    with pytest.raises(TransientConnectorError) as caught:
        runner.run(dc.send(jid, "hello", idempotency_key="k"))
    assert caught.value.retry_after == 120 and caught.value.chat_id == jid
    fake_discord.fail(f"POST /channels/{general}/messages", 429, retry_after=120)
    with write_tx(engine) as conn:
        outbox.add(conn, key="run:1:reply", chat_jid=jid, text="later")
    assert deliver_chat(delivery_deps(engine, [dc], runner, retry_base_s=1), jid) == "waiting"
    row = outbox_rows(engine)[0]
    assert row.status == "pending" and row.next_attempt_at_ms - row.created_at_ms >= 100_000
    runner.run(dc.close())


@pytest.mark.parametrize("status", [403, 404])
def test_missing_access_and_unknown_channel_are_permanent(
    fake_discord, engine, runner, tmp_path, status: int
) -> None:
    general = fake_discord.add_channel()
    jid = f"dc:{general}"
    dc = connector(fake_discord, tmp_path)
    fake_discord.fail_channel(general, status)
    with pytest.raises(PermanentConnectorError, match=str(status)):
        runner.run(dc.send(jid, "x", idempotency_key="k"))
    with write_tx(engine) as conn:
        outbox.add(conn, key="run:1:reply", chat_jid=jid, text="never arrives")
    assert deliver_chat(delivery_deps(engine, [dc], runner), jid) == "drained"
    assert [r.status for r in outbox_rows(engine)] == ["failed"]
    runner.run(dc.close())


def test_rejected_token_is_permanent(fake_discord, runner, tmp_path) -> None:
    general = fake_discord.add_channel()
    dc = DiscordConnector("wrong-token", assistant_name="Andy", state=ConnectorState(tmp_path / "c.db"))
    with pytest.raises(PermanentConnectorError, match="DISCORD_BOT_TOKEN") as caught:
        runner.run(dc.send(f"dc:{general}", "x", idempotency_key="k"))
    assert "wrong-token" not in str(caught.value)


def test_typing_indicator_through_the_outbound_task(fake_discord, runner, tmp_path) -> None:
    general = fake_discord.add_channel()
    dc = connector(fake_discord, tmp_path)
    assert show_typing([dc], runner, f"dc:{general}") == "sent"
    assert fake_discord.typing == [general]
    assert show_typing([dc], runner, "dc:12345") == "failed"  # unknown channel
    runner.run(dc.close())
