"""The full Procfile stack (honcho) with the Telegram connector pointed at a fake Bot API:
a user registers a group with the CLI, chats in it, and a triggered message gets exactly one reply."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.conftest import base_env
from tests.integration.connectors.fake_telegram import BOT_USERNAME, FakeTelegram
from tests.integration.stack import procfile_stack, register_group_cli, wait_for

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
GROUP = -1001122334455
JID = f"tg:{GROUP}"


@pytest.mark.slow
def test_a_triggered_telegram_message_gets_exactly_one_reply(tmp_path: Path) -> None:
    fake = FakeTelegram().start()
    env = base_env(
        tmp_path,
        MICROCLAW_AGENT__PROVIDER="scripted",
        MICROCLAW_AGENT__SCRIPTED_MODE="seen",
        MICROCLAW_BROKER__POLLING_INTERVAL="0.02",
        MICROCLAW_CONNECTORS__TELEGRAM__BASE_URL=fake.base_url,
        MICROCLAW_CONNECTORS__TELEGRAM__BASE_FILE_URL=fake.base_file_url,
        MICROCLAW_CONNECTORS__TELEGRAM__POLL_TIMEOUT_S="1",
        TELEGRAM_BOT_TOKEN=fake.token,
    )
    env.pop("DISCORD_BOT_TOKEN", None)
    env["PATH"] = f"{BIN}:{env['PATH']}"
    register_group_cli(tmp_path, env, JID, name="Dev team", folder="telegram_dev-team")
    try:
        with procfile_stack(tmp_path, env):
            fake.push_message(GROUP, "just chatting")  # stored as context; not a trigger
            text = f"@{BOT_USERNAME} what did I say?"
            fake.push_message(
                GROUP, text, entities=[{"type": "mention", "offset": 0, "length": len(BOT_USERNAME) + 1}]
            )
            wait_for(lambda: fake.sent, 60, "the reply at the fake Telegram", interval=0.2)
            time.sleep(3)  # long enough for a duplicate to show up (the sweeper runs every few seconds)
            assert [(s.chat_id, s.text) for s in fake.sent] == [
                (GROUP, f"seen: just chatting | @Andy {text}")
            ]
            assert not fake.pending  # every update confirmed once stored
    finally:
        fake.stop()
