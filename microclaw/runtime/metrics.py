"""``GET /metrics``: the Prometheus text format, computed from the database at scrape time.

One `prometheus_client` collector reads `microclaw.store.stats` (a handful of aggregate
queries) and the broker's queue depths each time it is scraped; the host keeps no counters of
its own, so every process's work shows and a restart loses nothing. Served by the host on the
localhost surface behind the same token as ``/status`` (`microclaw.runtime.control`).

| metric | from |
|---|---|
| ``microclaw_inbound_messages_total{connector}`` | stored human messages per chat channel |
| ``microclaw_runs_total{kind,status}``, ``microclaw_run_duration_seconds_total{kind,status}`` | ``runs`` |
| ``microclaw_lease_takeovers_total`` | runs a later lease holder found abandoned |
| ``microclaw_queue_depth{queue}`` | the broker's ready messages per queue |
| ``microclaw_groups_with_unseen_messages`` | ``group_state`` behind its newest message |
| ``microclaw_task_queue{status}`` | claimed scheduled-task runs |
| ``microclaw_outbox_replies{status}`` | ``outbox`` rows per status |
| ``microclaw_tokens_total{direction}``, ``microclaw_cost_total``, ``…_model_calls_total`` | ``agent_usage`` |
| ``microclaw_sandbox_exec_seconds`` (count, sum) | ``sandbox.exec`` audit rows |
| ``microclaw_scheduler_lag_seconds`` | how overdue the earliest active task is (0: none) |
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from microclaw.config import Settings
from microclaw.runtime import queues
from microclaw.store import stats
from microclaw.store.db import read_tx

logger = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _lag_seconds(earliest: str | None, now: datetime) -> float:
    if earliest is None:
        return 0.0
    try:
        due = datetime.fromisoformat(earliest.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if due.tzinfo is None:
        due = due.replace(tzinfo=UTC)
    return max(0.0, (now - due).total_seconds())


class DatabaseCollector(Collector):
    """Yields MicroClaw's metric families from the app database (and the broker) per scrape."""

    def __init__(self, engine: Engine, broker_url: str | None = None) -> None:
        self.engine = engine
        self.broker_url = broker_url

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | SummaryMetricFamily]:
        with read_tx(self.engine) as conn:
            inbound = stats.inbound_by_connector(conn)
            runs = stats.runs_by_outcome(conn)
            outbox = stats.outbox_states(conn)
            inp, out, cost, calls = stats.usage_totals(conn)
            execs, exec_ms = stats.sandbox_exec_totals(conn)
            earliest = stats.earliest_due(conn)
            unseen = stats.groups_with_unseen(conn)
            task_queue = stats.task_queue_states(conn)
        family = CounterMetricFamily(
            "microclaw_inbound_messages", "Stored inbound messages", labels=["connector"]
        )
        for connector, n in sorted(inbound.items()):
            family.add_metric([connector], n)
        yield family
        count = CounterMetricFamily("microclaw_runs", "Agent runs by outcome", labels=["kind", "status"])
        seconds = CounterMetricFamily(
            "microclaw_run_duration_seconds", "Seconds spent in finished runs", labels=["kind", "status"]
        )
        abandoned = 0
        for kind, status, n, secs in runs:
            count.add_metric([kind, status], n)
            seconds.add_metric([kind, status], secs)
            abandoned += n if status == "abandoned" else 0
        yield count
        yield seconds
        yield CounterMetricFamily(
            "microclaw_lease_takeovers", "Runs found abandoned by a later lease holder", value=abandoned
        )
        boxes = GaugeMetricFamily("microclaw_outbox_replies", "Replies per outbox status", labels=["status"])
        for status in ("pending", "sending", "delivered", "failed", "uncertain", "discarded"):
            boxes.add_metric([status], outbox.get(status, 0))
        yield boxes
        tokens = CounterMetricFamily("microclaw_tokens", "Model tokens", labels=["direction"])
        tokens.add_metric(["input"], inp)
        tokens.add_metric(["output"], out)
        yield tokens
        yield CounterMetricFamily("microclaw_cost", "Model cost (provider units)", value=cost)
        yield CounterMetricFamily("microclaw_model_calls", "Model calls (agent steps)", value=calls)
        yield SummaryMetricFamily(
            "microclaw_sandbox_exec_seconds",
            "Sandbox exec latency",
            count_value=execs,
            sum_value=exec_ms / 1000,
        )
        yield GaugeMetricFamily(
            "microclaw_scheduler_lag_seconds",
            "How overdue the earliest active scheduled task is",
            value=_lag_seconds(earliest, datetime.now(tz=UTC)),
        )
        yield GaugeMetricFamily(
            "microclaw_groups_with_unseen_messages",
            "Groups with messages the router has not seen",
            value=unseen,
        )
        tq = GaugeMetricFamily("microclaw_task_queue", "Claimed scheduled-task runs", labels=["status"])
        for status, n in sorted(task_queue.items()):
            tq.add_metric([status], n)
        yield tq
        depth = GaugeMetricFamily("microclaw_queue_depth", "Ready broker messages", labels=["queue"])
        if self.broker_url is not None:
            from microclaw.broker.transport import queue_depths

            try:
                for name, n in sorted(queue_depths(self.broker_url, queues.QUEUES).items()):
                    depth.add_metric([name], n)
            except Exception as exc:  # a broker that does not answer must not fail the scrape
                logger.debug("queue depths unavailable: %s", exc)
        yield depth


def render(engine: Engine, settings: Settings | None = None) -> bytes:
    """One scrape: the Prometheus text exposition of every family."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine, settings.broker.url if settings is not None else None))
    return generate_latest(registry)
