"""``microclaw-gateway``: run the device gateway, and export the device CA for provisioning.

An entry point: it loads settings, sets up logging and wires the gateway's parts (CA,
pairing, device log, the inbound path with its Celery kick); the work is in
`microclaw.gateway`. ``run`` stops cleanly on SIGTERM/SIGINT. ``run --if-enabled`` (the
Procfile's line) serves only when ``[gateway] enabled`` is true and otherwise idles as a
``sleep`` process, so a stack without devices pays nothing for the gateway.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import os
import shutil
import signal
import sys
from typing import TYPE_CHECKING, NoReturn

import click

from microclaw.cli.common import console, fail, load_settings_or_exit
from microclaw.config import Settings
from microclaw.errors import PermanentStoreError
from microclaw.logs import configure_logging

if TYPE_CHECKING:
    from microclaw.gateway.ca import DeviceCA


TLS_READ_BUFFER = 32 * 1024


@click.group(help="The device gateway: ESP32-S3 terminals over mutual TLS.")
def gateway_main() -> None:
    pass


def _ca(settings: Settings) -> DeviceCA:
    from microclaw.gateway.ca import DeviceCA

    return DeviceCA.load_or_create(settings.data_dir / "gateway", sans=settings.gateway.sans)


def _idle() -> NoReturn:
    """Stay up without serving until stopped: a process that exits would stop the whole
    ``honcho`` stack. Becomes ``sleep infinity`` (under 1 MB, no wake-ups) where it exists."""
    sys.stdout.flush()
    sys.stderr.flush()
    sleep = shutil.which("sleep")
    if sleep is not None:
        os.execv(sleep, [sleep, "infinity"])
    while True:  # pragma: no cover - every Linux and macOS has sleep(1)
        signal.pause()


@gateway_main.command(help="Serve devices (pairing, sessions, replay) until stopped.")
@click.option("--port", type=int, default=None, help="Override [gateway] port.")
@click.option(
    "--if-enabled",
    is_flag=True,
    help="Serve only when [gateway] enabled is true; otherwise idle until stopped (the Procfile's line).",
)
def run(port: int | None, if_enabled: bool) -> None:
    settings = load_settings_or_exit()
    configure_logging(settings.logging.level, settings.logging.format, role="gateway")
    if if_enabled and not settings.gateway.enabled:
        logging.getLogger(__name__).info(
            "device gateway off ([gateway] enabled = false): not serving; set it to true and restart"
            " to use devices"
        )
        _idle()
    from microclaw.gateway.devicelog import DeviceLog
    from microclaw.gateway.pairing import Pairing, PairingLimits
    from microclaw.gateway.sessions import Gateway
    from microclaw.pipeline.inbound import ingest_and_kick, reject
    from microclaw.runtime.celery_app import Publisher, create_app
    from microclaw.runtime.wiring import (
        app_engine,
        bootstrap_database,
        make_group_folder,
        sender_allowlist_loader,
    )

    try:
        bootstrap_database(settings)
    except PermanentStoreError as exc:
        fail(f"database migration failed, not starting: {exc}")
    g = settings.gateway
    ca = _ca(settings)
    engine = app_engine(settings)
    publish = Publisher(create_app(settings))
    allowlist = sender_allowlist_loader(settings)
    gateway = Gateway(
        g,
        engine=engine,
        ssl_context=ca.server_context(),
        pairing=Pairing(
            engine,
            ca,
            PairingLimits(
                g.code_ttl_s, g.token_ttl_s, g.pair_begin_per_minute, g.max_open_pairings, g.cert_days
            ),
            trigger=settings.trigger,
        ),
        log=DeviceLog.in_data_dir(settings.data_dir),
        ingest=lambda envelope: ingest_and_kick(engine, envelope, publish.kick, allowlist=allowlist),
        reject=lambda error: reject(engine, error, source="device"),
        on_paired=lambda paired: make_group_folder(engine, settings.groups_dir, paired.folder),
        max_text_bytes=settings.router.max_text_bytes,
    )

    # asyncio gives every TLS connection a 256 KiB read buffer (`SSLProtocol.max_size`), which
    # was ~3/4 of the gateway's memory per device (bench/gateway.py: 340 KB per session). A TLS
    # record is at most 16 KiB, so 32 KiB reads lose nothing. This process only.
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gateway.stop)
        await gateway.serve(g.host, port if port is not None else g.port)

    try:
        asyncio.run(main())
    finally:
        engine.dispose()


@gateway_main.command(
    "ca-pin", help="Print the device CA's pin (and with --pem its certificate) for firmware."
)
@click.option("--pem", is_flag=True, help="Print the CA certificate (PEM) that firmware trusts.")
def ca_pin(pem: bool) -> None:
    settings = load_settings_or_exit()
    ca = _ca(settings)
    if pem:
        sys.stdout.write(ca.ca_pem)
        return
    console.print(ca.pin(), highlight=False)
