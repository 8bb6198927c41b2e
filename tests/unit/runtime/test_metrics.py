"""`/metrics`: Prometheus text from the database, parsed back with prometheus_client's parser."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from microclaw.pipeline.delivery import deliver_chat
from microclaw.pipeline.inbound import ingest
from microclaw.pipeline.router import process_group
from microclaw.runtime.control import create_control_app
from microclaw.runtime.metrics import render
from microclaw.store import audit, usage
from microclaw.store.db import write_tx
from tests.helpers import delivery_deps, envelope, fake_connector, register, router_deps

TOKEN = "t" * 43


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_what_the_pipeline_did(engine, tmp_path) -> None:
    register(engine, "fake:team")
    ingest(engine, envelope("fake:team", "@Andy one"))
    ingest(engine, envelope("fake:team", "@Andy two"))
    process_group(router_deps(engine, tmp_path), "fake:team")
    with asyncio.Runner() as runner:
        broken = fake_connector(tmp_path, permanent_chats=("fake:team",))
        deliver_chat(delivery_deps(engine, [broken], runner), "fake:team")
    with write_tx(engine) as conn:
        audit.record(conn, "sandbox.exec", decision="allow", group="g", duration_ms=250)
        audit.record(conn, "sandbox.exec", decision="allow", group="g", duration_ms=750)
        usage.record(
            conn,
            run_id=1,
            chat_jid="fake:team",
            group_folder="fake_team",
            model="m",
            steps=3,
            input_tokens=100,
            output_tokens=20,
            cost=0.5,
        )

    got = samples(render(engine).decode())
    assert got[("microclaw_inbound_messages_total", (("connector", "fake"),))] == 2
    assert got[("microclaw_runs_total", (("kind", "messages"), ("status", "done")))] == 1
    assert got[("microclaw_outbox_replies", (("status", "failed"),))] == 1
    assert got[("microclaw_outbox_replies", (("status", "delivered"),))] == 0
    assert got[("microclaw_sandbox_exec_seconds_count", ())] == 2
    assert got[("microclaw_sandbox_exec_seconds_sum", ())] == 1.0
    assert got[("microclaw_model_calls_total", ())] == 3
    assert got[("microclaw_tokens_total", (("direction", "input"),))] == 100
    assert got[("microclaw_tokens_total", (("direction", "output"),))] == 20
    assert got[("microclaw_cost_total", ())] == 0.5
    assert got[("microclaw_scheduler_lag_seconds", ())] == 0
    assert got[("microclaw_lease_takeovers_total", ())] == 0


def test_metrics_route_needs_the_token(engine) -> None:
    async def status() -> dict:
        return {}

    async def nothing(*_: object) -> None:
        return None

    async def metrics() -> bytes:
        return await asyncio.to_thread(render, engine)

    app = create_control_app(
        status=status,
        problems=lambda _: [],
        local=None,
        on_reject=nothing,
        token=TOKEN,
        on_refuse=nothing,
        metrics=metrics,
    )

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as c:
            bare = await c.get("/metrics")
            ok = await c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
            return bare, ok

    bare, ok = asyncio.run(go())
    assert bare.status_code == 401
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
    assert any(f.name == "microclaw_runs" for f in text_string_to_metric_families(ok.text))
