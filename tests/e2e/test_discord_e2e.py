"""The full Procfile stack (honcho) with the Discord connector pointed at a fake Discord (REST +
gateway): a user registers a channel with the CLI, chats in it, and a message that mentions the
bot gets exactly one reply, even when the gateway delivers that event twice."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.conftest import base_env
from tests.integration.connectors.fake_discord import BOT_ID, FakeDiscord
from tests.integration.stack import procfile_stack, register_group_cli, wait_for

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_a_mention_in_a_discord_channel_gets_exactly_one_reply(tmp_path: Path) -> None:
    fake = FakeDiscord().start()
    channel = fake.add_channel("dev-team")
    env = base_env(
        tmp_path,
        MICROCLAW_AGENT__PROVIDER="scripted",
        MICROCLAW_AGENT__SCRIPTED_MODE="seen",
        MICROCLAW_BROKER__POLLING_INTERVAL="0.02",
        MICROCLAW_CONNECTORS__DISCORD__API_BASE_URL=fake.api_base,
        MICROCLAW_CONNECTORS__DISCORD__GATEWAY_URL=fake.gateway_url,
        DISCORD_BOT_TOKEN=fake.token,
    )
    env.pop("TELEGRAM_BOT_TOKEN", None)
    env["PATH"] = f"{BIN}:{env['PATH']}"
    register_group_cli(tmp_path, env, f"dc:{channel}", name="Dev team", folder="discord_dev-team")
    try:
        with procfile_stack(tmp_path, env):
            wait_for(lambda: fake.live_sessions >= 1, 30, "the host's gateway session", interval=0.2)
            fake.push_message(channel, "just chatting")  # stored as context; not a trigger
            mention = fake.push_message(channel, f"<@{BOT_ID}> what did I say?", mention_bot=True)
            fake.redispatch(mention)  # the gateway delivering the same event twice
            wait_for(lambda: fake.sent, 60, "the reply at the fake Discord", interval=0.2)
            time.sleep(3)  # long enough for a duplicate to show up (the sweeper runs every few seconds)
            assert [(s.channel_id, s.content) for s in fake.sent] == [
                (channel, "seen: just chatting | @Andy what did I say?")
            ]
    finally:
        fake.stop()
