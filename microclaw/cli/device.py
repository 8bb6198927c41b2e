"""``microclaw device``: claim a pairing code, list paired devices, revoke one.

An entry point working on the app database directly (the gateway need not be running):
``claim`` vouches for the device showing a code (the device then collects its token and
certificate from the gateway), ``list`` shows online state, last seen and versions, ``revoke``
marks a device revoked; the gateway closes its live session within ``revocation_check_s`` and
refuses its certificate from then on.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import click
from rich.table import Table

from microclaw.cli.common import console, fail, load_settings_or_exit, print_table

if TYPE_CHECKING:
    from sqlalchemy import Engine


@click.group(help="Pair, list and revoke ESP32-S3 terminal devices.")
def device() -> None:
    pass


def _engine() -> Engine:
    from microclaw.runtime.wiring import app_engine, bootstrap_database

    settings = load_settings_or_exit()
    if not settings.gateway.enabled:
        # To stderr, so scripts reading the output are not affected.
        click.echo(
            "note: the device gateway is off ([gateway] enabled = false in settings.toml, or "
            "MICROCLAW_GATEWAY__ENABLED): devices cannot connect or pair until it is on and the "
            "stack restarted",
            err=True,
        )
    bootstrap_database(settings)
    return app_engine(settings)


@device.command(help="Claim the pairing CODE a device shows, naming the device.")
@click.argument("code")
@click.option("--name", required=True, help="A name for the device (its chat's name).")
def claim(code: str, name: str) -> None:
    from microclaw.gateway.pairing import PairingError
    from microclaw.gateway.pairing import claim as claim_code
    from microclaw.store.db import now_ms

    name = name.strip()
    if not name or len(name) > 64:
        fail("--name must be 1-64 characters")
    engine = _engine()
    try:
        row = claim_code(engine, code, name=name, now_ms=now_ms())
    except PairingError as exc:
        fail(f"{exc.detail} ({exc.code})")
    finally:
        engine.dispose()
    console.print(f"claimed: device {row.device_id} will pair as {name!r} when it next asks", highlight=False)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@device.command("list", help="Paired devices: status, online, last seen, board, versions.")
def list_devices() -> None:
    from microclaw.store import devices
    from microclaw.store.db import read_tx

    engine = _engine()
    try:
        with read_tx(engine) as conn:
            rows = devices.all_devices(conn)
    finally:
        engine.dispose()
    if not rows:
        console.print("no devices paired")
        return
    table = Table("device", "name", "status", "online", "last seen", "board", "firmware", "model")
    for r in rows:
        table.add_row(
            r.device_id,
            r.name,
            r.status,
            "yes" if r.online else "no",
            _when(r.last_seen_ms),
            r.board or "-",
            r.fw_version or "-",
            r.model_version or "-",
        )
    print_table(table)


@device.command(help="Revoke a device: its live session closes, its certificate is refused.")
@click.argument("device_id")
def revoke(device_id: str) -> None:
    from microclaw.store import audit, devices
    from microclaw.store.db import now_ms, write_tx

    engine = _engine()
    try:
        with write_tx(engine) as conn:
            known = devices.get_device(conn, device_id) is not None
            changed = devices.revoke(conn, device_id, now_ms())
            if changed:
                audit.record(conn, "device.revoked", decision="deny", device_id=device_id)
    finally:
        engine.dispose()
    if not known:
        fail(f"no device {device_id!r}")
    console.print(f"revoked {device_id}" if changed else f"{device_id} was already revoked", highlight=False)
