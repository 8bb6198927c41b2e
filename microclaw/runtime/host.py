"""The host process: connectors' listening loops and the localhost control surface.

`run_host()` wires what the entry point built: each active connector's ``listen`` runs in its
own supervised task (a crash is recorded in ``connector_status`` and restarted with exponential
backoff; it never takes the host down), every inbound envelope is made durable in a worker
thread before ``deliver`` returns (so the connector acknowledges the platform only then), and
the Starlette app is served by uvicorn on loopback behind its guard (token, Host, cross-site and
body checks; `microclaw.runtime.control`), with the per-install token read or created at start.
Refused requests are audited (``http.refused``, throttled). SIGTERM/SIGINT stop it cleanly.

The host never calls the LLM and never runs tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

import uvicorn
from sqlalchemy import Engine

from microclaw.config import Settings
from microclaw.connectors.base import BaseConnector
from microclaw.connectors.local import LocalConnector
from microclaw.envelope import Envelope
from microclaw.errors import EnvelopeError, PermanentConnectorError
from microclaw.pipeline.inbound import ingest_and_kick, reject
from microclaw.private import load_or_create_token
from microclaw.runtime.control import Refusal, RefusalThrottle, create_control_app
from microclaw.runtime.status import collect_status, health_problems
from microclaw.runtime.wiring import ConnectorBoot, sender_allowlist_loader
from microclaw.store import audit
from microclaw.store import status as store_status
from microclaw.store.db import write_tx

logger = logging.getLogger(__name__)


class QuietServer(uvicorn.Server):
    """uvicorn's server, waking once a second when idle instead of ten times.

    uvicorn's housekeeping tick only refreshes the Date header (once a second anyway) and looks
    at ``should_exit``; at 10 Hz it was most of an idle host's CPU. Here every tick refreshes the
    header, and setting ``should_exit`` (our `Host.stop`, or uvicorn's own signal handler) wakes
    the loop at once, so stopping is as prompt as before.
    """

    tick_s = 1.0

    def __init__(self, config: uvicorn.Config) -> None:
        self._exit = asyncio.Event()
        super().__init__(config)

    @property
    def should_exit(self) -> bool:
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._exit.set()
        else:
            self._exit.clear()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # a multiple of 10: on_tick's once-a-second work
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), timeout=self.tick_s)


RESTART_MAX_DELAY_S = 60.0
# A listener that ran this long before failing was healthy: its backoff starts over.
HEALTHY_RUN_S = 60.0


def record_connector(
    engine: Engine,
    name: str,
    state: str,
    *,
    detail: str | None = None,
    error: str | None = None,
    event: bool = False,
) -> None:
    """Upsert one connector's status row."""
    with write_tx(engine) as conn:
        store_status.record_connector(conn, name, state, detail=detail, error=error, event=event)


class Host:
    """Runs connectors and the control surface until stopped."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        boots: list[ConnectorBoot],
        publish_kick: Callable[[str], object],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.boots = boots
        self.publish_kick = publish_kick
        self.allowlist = sender_allowlist_loader(settings)
        self.connectors: list[BaseConnector] = [b.connector for b in boots if b.connector is not None]
        self.local = next((c for c in self.connectors if isinstance(c, LocalConnector)), None)
        self._stop = asyncio.Event()
        self.server: QuietServer | None = None
        self._refusals = RefusalThrottle()

    def _ingest(self, envelope: Envelope) -> None:
        ingest_and_kick(self.engine, envelope, self.publish_kick, allowlist=self.allowlist)
        record_connector(self.engine, envelope.source, "active", event=True)

    async def deliver(self, envelope: Envelope) -> None:
        """The ``deliver`` callback handed to every connector's ``listen``: durable before it
        returns, so the connector may acknowledge the platform after it."""
        await asyncio.to_thread(self._ingest, envelope)

    async def _supervise(self, connector: BaseConnector) -> None:
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            started = asyncio.get_running_loop().time()
            try:
                record_connector(self.engine, connector.name, "active", detail="listening")
                await connector.listen(self.deliver)
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if asyncio.get_running_loop().time() - started >= HEALTHY_RUN_S:
                    attempt = 1  # it had been working: a fresh failure, not a failing streak
                delay = (
                    RESTART_MAX_DELAY_S
                    if isinstance(exc, PermanentConnectorError)
                    else min(RESTART_MAX_DELAY_S, 2.0 ** (attempt - 1))
                )
                logger.error(
                    "connector %s failed: %s; restarting in %.0f s",
                    connector.name,
                    exc,
                    delay,
                    extra={"connector": connector.name},
                    exc_info=not isinstance(exc, PermanentConnectorError),
                )
                record_connector(self.engine, connector.name, "error", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(collect_status, self.settings, self.engine)

    async def _reject(self, error: EnvelopeError) -> None:
        await asyncio.to_thread(reject, self.engine, error, source="local")

    async def _refuse(self, refusal: Refusal) -> None:
        """Audit a refused HTTP request (throttled per code: a web page may send thousands)."""
        suppressed = self._refusals.admit(refusal.code)
        if suppressed is None:
            logger.debug("http request refused: %s %s", refusal.status, refusal.reason)
            return
        logger.warning(
            "http request refused: %s %s", refusal.status, refusal.reason, extra={"path": refusal.path[:200]}
        )
        try:
            await asyncio.to_thread(
                audit.record_now,
                self.engine,
                "http.refused",
                decision="deny",
                status=refusal.status,
                code=refusal.code,
                reason=refusal.reason,
                path=refusal.path[:200],
                suppressed_before=suppressed,
            )
        except Exception:
            logger.exception("could not audit a refused http request")

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.should_exit = True

    async def _metrics(self) -> bytes:
        from microclaw.runtime.metrics import render

        return await asyncio.to_thread(render, self.engine, self.settings)

    async def run(self) -> None:
        for boot in self.boots:
            record_connector(
                self.engine,
                boot.name,
                boot.state,
                detail=boot.detail,
                error=boot.detail if boot.state == "error" else None,
            )
        token = await asyncio.to_thread(load_or_create_token, self.settings.http_token_path)
        app = create_control_app(
            status=self.status,
            problems=health_problems,
            local=self.local,
            on_reject=self._reject,
            token=token,
            on_refuse=self._refuse,
            metrics=self._metrics,
        )
        config = uvicorn.Config(
            app,
            host=self.settings.http.host,
            port=self.settings.http.port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self.server = QuietServer(config)
        # uvicorn's serve() swaps in its own SIGINT/SIGTERM handlers and, once it has stopped,
        # restores ours and re-raises the signal, so `stop` still runs for either signal.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        tasks = [asyncio.create_task(self._supervise(c), name=f"connector-{c.name}") for c in self.connectors]
        server_task = asyncio.create_task(self.server.serve(), name="http")
        logger.info(
            "host running",
            extra={"http": self.settings.http.base_url, "connectors": [c.name for c in self.connectors]},
        )
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server_task
        for connector in self.connectors:
            await connector.close()
            record_connector(self.engine, connector.name, "stopped")
        logger.info("host stopped")
