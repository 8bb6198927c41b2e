"""``microclaw-gateway``: run the device gateway, and export the device CA for provisioning.

An entry point: it loads settings, sets up logging and wires the gateway's parts (CA,
pairing, device log, the inbound path with its Celery kick, OTA serving, the voice providers
from ``[voice]``); the work is in `microclaw.gateway`. ``run`` stops cleanly on SIGTERM/SIGINT.
``run --if-enabled`` (the Procfile's line) serves only when ``[gateway] enabled`` is true and
otherwise idles as a ``sleep`` process, so a stack without devices pays nothing for the gateway.

Memory (bench/gateway.py; target 1,000 devices in <= 150 MB): the database migration runs in
a child process (``migrate``), so the gateway never holds Alembic (~12 MB); asyncio's TLS read
buffer is cut to `TLS_READ_BUFFER` per connection; the process uses one malloc arena; and after
connections come or go, freed heap is handed back to the system (glibc ``malloc_trim``), which
TLS handshakes otherwise leave fragmented. What remains per device (~64 KB) is mostly OpenSSL's
own state (~30 KB for an mTLS session holding the client certificate), asyncio's SSL transport
and websockets' connection (~11 KB each; tracemalloc), and the holes a connect storm leaves in
the heap (~10 KB: the same 1,000 devices connecting 20 at a time cost ~10 MB less).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, NoReturn

import click

from microclaw.cli.common import console, fail, load_settings_or_exit
from microclaw.config import Settings
from microclaw.errors import ConfigError, PermanentStoreError
from microclaw.logs import configure_logging

if TYPE_CHECKING:
    from microclaw.gateway.ca import DeviceCA
    from microclaw.gateway.sessions import Gateway
    from microclaw.gateway.voice import VoiceTurns

logger = logging.getLogger(__name__)

#: asyncio's per-connection TLS read buffer (its default is 256 KiB, allocated up front). A
#: smaller one only means more reads for a large record; devices send small frames (audio at
#: 32 KB/s during a listen is ~32 reads a second). 4 KiB cost 2.4 MB more per 1,000 devices.
TLS_READ_BUFFER = 1024
#: How often the gateway looks whether connections came or went (then trims the heap), and the
#: longest it waits for them to settle before trimming anyway.
TRIM_CHECK_S = 0.5
TRIM_MAX_GAP_S = 10.0
#: glibc's ``mallopt`` parameter for the number of malloc arenas.
M_ARENA_MAX = -8


@click.group(help="The device gateway: ESP32-S3 terminals over mutual TLS.")
def gateway_main() -> None:
    pass


def _ca(settings: Settings) -> DeviceCA:
    from microclaw.gateway.ca import DeviceCA

    return DeviceCA.load_or_create(settings.data_dir / "gateway", sans=settings.gateway.sans)


def _voice(settings: Settings) -> VoiceTurns | None:
    """The voice side from ``[voice]``: None when both directions are off. Providers load
    their engines lazily (the offline model on the first voice turn)."""
    v = settings.voice
    if v.stt == "off" and v.tts == "off":
        return None
    from microclaw.gateway.speech import load_stt, load_tts
    from microclaw.gateway.speech.espeak import EspeakTTS
    from microclaw.gateway.voice import VoiceLimits, VoiceTurns

    tts = load_tts(v)
    if isinstance(tts, EspeakTTS) and not tts.available:
        logger.warning("voice.tts is 'espeak' but espeak-ng is not installed: replies are text only")
        tts = None
    return VoiceTurns(VoiceLimits.from_settings(v), stt=load_stt(v), tts=tts)


def _start_migration() -> subprocess.Popen[str]:
    """``migrate`` in a child process (same interpreter, environment and directory)."""
    return subprocess.Popen(
        [sys.executable, "-m", "microclaw.cli.gateway", "migrate"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _one_malloc_arena() -> None:
    """One glibc malloc arena for the whole process (glibc only; before any thread starts).
    The gateway's threads (the `asyncio.to_thread` workers) otherwise each get an arena of their
    own, and the holes left in each by a connection storm cost ~1.6 MB per 1,000 devices;
    those threads mostly wait on SQLite, so sharing one arena costs no measurable speed."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is not None:
        mallopt(M_ARENA_MAX, 1)


async def _trim_heap(gateway: Gateway) -> None:
    """Return freed heap to the system once connections came or went (glibc only): when they
    have settled for one check, or at most every `TRIM_MAX_GAP_S` while they keep changing (a
    trim of a fragmented heap takes tens of ms of the event loop, so not on every check)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return
    loop = asyncio.get_running_loop()
    last = trimmed = gateway.connections_seen
    last_trim = loop.time()
    while True:
        await asyncio.sleep(TRIM_CHECK_S)
        seen = gateway.connections_seen
        settled, last = seen == last, seen
        if seen != trimmed and (settled or loop.time() - last_trim >= TRIM_MAX_GAP_S):
            trim(0)
            trimmed, last_trim = seen, loop.time()


@gateway_main.command(hidden=True, help="Migrate the app database (run by `run` in a child process).")
def migrate() -> None:
    settings = load_settings_or_exit()
    configure_logging(settings.logging.level, settings.logging.format, role="gateway")
    from microclaw.runtime.wiring import bootstrap_database

    try:
        bootstrap_database(settings)
    except PermanentStoreError as exc:
        fail(f"database migration failed, not starting: {exc}")


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
        logger.info(
            "device gateway off ([gateway] enabled = false): not serving; set it to true and restart"
            " to use devices"
        )
        _idle()
    _one_malloc_arena()
    migration = _start_migration()  # runs while this process imports the rest
    from microclaw.gateway.devicelog import DeviceLog
    from microclaw.gateway.ota import CanaryLimits
    from microclaw.gateway.otaserve import OtaService
    from microclaw.gateway.otastore import ResultRules
    from microclaw.gateway.pairing import Pairing, PairingLimits
    from microclaw.gateway.sessions import Gateway
    from microclaw.pipeline.inbound import ingest_and_kick, reject
    from microclaw.runtime.celery_app import Publisher, create_app
    from microclaw.runtime.wiring import app_engine, make_group_folder, sender_allowlist_loader

    _, errors = migration.communicate()
    if migration.returncode != 0:  # the child printed why (and logged it)
        fail(errors.strip().removeprefix("error:").strip() or "database migration failed, not starting")
    g = settings.gateway
    try:
        voice = _voice(settings)
    except ConfigError as exc:
        fail(str(exc))
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
        ota=OtaService(
            engine,
            settings.data_dir,
            ResultRules(
                settings.ota.halt_failure_rate,
                settings.ota.halt_min_results,
                CanaryLimits(
                    settings.ota.max_boot_failures,
                    settings.ota.max_confirm_miss_rate,
                    settings.ota.max_latency_ms,
                ),
            ),
        ),
        voice=voice,
    )

    # asyncio gives every TLS connection a 256 KiB read buffer (`SSLProtocol.max_size`), which
    # was ~3/4 of the gateway's memory per device (bench/gateway.py: 340 KB per session; 32 KiB
    # still cost 28 MB per 1,000 devices). This process only.
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gateway.stop)
        trimmer = loop.create_task(_trim_heap(gateway))
        try:
            await gateway.serve(g.host, port if port is not None else g.port)
        finally:
            trimmer.cancel()

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


if __name__ == "__main__":
    gateway_main()
