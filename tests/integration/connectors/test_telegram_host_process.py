"""The real host process with the Telegram connector, SIGKILLed between storing and confirming."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from microclaw.store.db import read_tx
from microclaw.store.models import ConnectorStatus
from tests.helpers import register
from tests.integration.connectors.conftest import stored
from tests.integration.connectors.fake_telegram import FakeTelegram
from tests.integration.stack import wait_for

pytestmark = pytest.mark.slow

GROUP = -1009876543210
JID = f"tg:{GROUP}"


def test_host_killed_after_storing_but_before_confirming_loses_and_duplicates_nothing(
    make_stack, fake_telegram: FakeTelegram
) -> None:
    stack = make_stack(
        TELEGRAM_BOT_TOKEN=fake_telegram.token,
        MICROCLAW_CONNECTORS__TELEGRAM__BASE_URL=fake_telegram.base_url,
        MICROCLAW_CONNECTORS__TELEGRAM__POLL_TIMEOUT_S="1",
    )
    register(stack.engine, JID, requires_trigger=False)
    fake_telegram.ignore_next_confirm()  # the confirming getUpdates dies with the process
    fake_telegram.push_message(GROUP, "survive the crash")
    stack.host()
    wait_for(lambda: stored(stack.engine, JID), 30, "the message to be stored")
    wait_for(lambda: len(fake_telegram.calls("getUpdates")) >= 2, 10, "the confirming poll")
    stack.kill("host")
    assert fake_telegram.pending, "Telegram still holds the update: it was never confirmed"

    stack.host()
    wait_for(lambda: not fake_telegram.pending, 30, "the restarted host to fetch and confirm the update")
    assert [r.content for r in stored(stack.engine, JID)] == ["survive the crash"]
    with read_tx(stack.engine) as conn:
        row = conn.execute(
            select(ConnectorStatus.__table__).where(ConnectorStatus.__table__.c.name == "telegram")
        ).one()
    assert row.state == "active" and row.last_event_at_ms
