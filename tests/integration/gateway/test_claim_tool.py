"""The main group's ``claim_device`` host tool pairs a real device through a real gateway, as
``microclaw device claim`` does; from any other group it is refused, audited, and the device
never gets a certificate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from microclaw.agent.providers.base import ToolCall
from microclaw.agent.tools.base import Toolbox, ToolContext
from microclaw.agent.tools.host import HostEnv, host_tools
from microclaw.gateway.simulator import PairingRefused
from microclaw.store import audit
from microclaw.store.db import read_tx
from tests.helpers import register
from tests.integration.gateway.harness import GatewayRig
from tests.integration.gateway.test_gateway import run

pytestmark = pytest.mark.slow

MAIN = ToolContext("local:main", "main", True)
FAMILY = ToolContext("local:family", "family", False)


def toolbox(rig: GatewayRig, tmp_path: Path) -> Toolbox:
    engine = rig.stack.engine
    register(engine, MAIN.chat_jid, folder=MAIN.group_folder, is_main=True)
    register(engine, FAMILY.chat_jid, folder=FAMILY.group_folder)
    env = HostEnv(engine, timezone="UTC", groups_dir=tmp_path / "groups")
    return Toolbox(host_tools(env), audit=lambda kind, **f: audit.record_now(engine, kind, **f))


def test_the_main_group_claims_a_device_code_and_the_device_pairs(rig: GatewayRig, tmp_path: Path) -> None:
    box = toolbox(rig, tmp_path)
    said: list[str] = []

    def claim_by_agent(code: str) -> None:
        result = box.execute(MAIN, ToolCall("c1", "claim_device", {"code": code, "name": "Kitchen"}))
        said.append(result.content)
        assert not result.is_error, result.content

    async def scenario() -> None:
        sim = rig.device("kitchen-1")
        await sim.pair(lambda code: asyncio.to_thread(claim_by_agent, code))
        assert sim.paired

    run(scenario())
    assert "kitchen-1" in said[0]
    with read_tx(rig.stack.engine) as conn:
        name = conn.execute(text("SELECT name FROM devices WHERE device_id = 'kitchen-1'")).scalar_one()
    assert name == "Kitchen"


def test_another_group_cannot_claim_and_the_device_stays_unpaired(rig: GatewayRig, tmp_path: Path) -> None:
    box = toolbox(rig, tmp_path)
    answers: list[str] = []

    def claim_by_family(code: str) -> None:
        result = box.execute(FAMILY, ToolCall("c1", "claim_device", {"code": code, "name": "Mine now"}))
        answers.append(result.content)

    async def scenario() -> None:
        sim = rig.device("porch-1")
        with pytest.raises((TimeoutError, PairingRefused)):
            async with asyncio.timeout(3):
                await sim.pair(lambda code: asyncio.to_thread(claim_by_family, code))
        assert not sim.paired

    run(scenario())
    assert answers and answers[0].startswith("denied:")
    with read_tx(rig.stack.engine) as conn:
        denied = audit.recent(conn, kind="agent.tool_denied")
        claimed = conn.execute(
            text("SELECT count(*) FROM device_pairings WHERE claimed_at_ms IS NOT NULL")
        ).scalar()
    assert [(d["detail"]["tool"], d["chat_jid"]) for d in denied] == [("claim_device", "local:family")]
    assert claimed == 0
