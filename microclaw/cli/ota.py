"""``microclaw ota``: the OTA signing key, publishing firmware and model bundles, rollouts.

An entry point on the app database and the data directory (the gateway need not be running;
a running one picks up rollout changes within ``[gateway] revocation_check_s``). The work is
in `microclaw.gateway.otastore`; the signing key lives at ``[ota] key_file``, outside the
project and the data directory.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from microclaw.cli.common import console, fail, load_settings_or_exit, print_table
from microclaw.config import DEFAULT_SETTINGS_FILE, Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine


@click.group(help="Signed OTA updates for devices: keys, publishing, staged rollouts.")
def ota() -> None:
    pass


def _engine(settings: Settings) -> Engine:
    from microclaw.runtime.wiring import app_engine, bootstrap_database

    bootstrap_database(settings)
    return app_engine(settings)


def _key_path(settings: Settings, key: Path | None) -> Path:
    return (key or settings.ota.key_file).expanduser()


@ota.command(help="Create the ed25519 signing key (0600) and print its public key (hex).")
@click.option("--key", type=click.Path(path_type=Path), default=None, help="Override [ota] key_file.")
@click.option("--force", is_flag=True, help="Replace an existing key (devices pinned to it stop updating).")
def keygen(key: Path | None, force: bool) -> None:
    from microclaw.gateway.otastore import OtaError, generate_key, public_key_text

    settings = load_settings_or_exit()
    path = _key_path(settings, key)
    forbidden = (DEFAULT_SETTINGS_FILE.parent, settings.data_dir, settings.groups_dir)
    try:
        public = generate_key(path, force=force, forbidden=forbidden)
    except (OtaError, OSError) as exc:
        fail(str(exc))
    console.print(f"OTA signing key written to {path} (0600)", highlight=False, soft_wrap=True)
    console.print(public_key_text(public, "hex").decode().strip(), highlight=False, soft_wrap=True)


@ota.command(help="Print the public key firmware pins (hex, base64, pem, or raw bytes).")
@click.option("--key", type=click.Path(path_type=Path), default=None, help="Override [ota] key_file.")
@click.option(
    "--format", "fmt", type=click.Choice(["hex", "base64", "pem", "raw"]), default="hex", show_default=True
)
def pubkey(key: Path | None, fmt: str) -> None:
    from microclaw.gateway.otastore import OtaError, load_key, public_key_text

    settings = load_settings_or_exit()
    try:
        private = load_key(_key_path(settings, key))
    except OtaError as exc:
        fail(str(exc))
    sys.stdout.buffer.write(public_key_text(private.public_key(), fmt))  # type: ignore[arg-type]
    sys.stdout.buffer.flush()


@ota.command(help="Publish FILE as a signed release (rolled out to 0 % until `ota rollout`).")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--kind", type=click.Choice(["firmware", "model"]), required=True)
@click.option("--version", "version", required=True, help="MAJOR.MINOR.PATCH")
@click.option("--board", required=True, help="The board the image is built for (as devices report it).")
@click.option("--min-version", default="0.0.0", show_default=True, help="Devices below it may not install.")
@click.option("--key", type=click.Path(path_type=Path), default=None, help="Override [ota] key_file.")
def publish(file: Path, kind: str, version: str, board: str, min_version: str, key: Path | None) -> None:
    from microclaw.gateway import otastore

    settings = load_settings_or_exit()
    try:
        private = otastore.load_key(_key_path(settings, key))
    except otastore.OtaError as exc:
        fail(str(exc))
    engine = _engine(settings)
    try:
        row = otastore.publish(
            engine,
            settings.data_dir,
            file,
            kind=kind,
            version=version,
            board=board,
            key=private,
            min_version=min_version,
            base_url=settings.ota.base_url,
            max_image_bytes=settings.ota.max_image_bytes,
        )
    except otastore.OtaError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    console.print(
        f"release {row.id}: {row.kind} {row.version} for {row.board}, {row.size} bytes, sha256 {row.sha256}"
        f" (at {row.percent:g} %; `microclaw ota rollout --percent P --release {row.id}`)",
        highlight=False,
        soft_wrap=True,
    )


_select = [
    click.option("--release", "release_id", type=int, default=None, help="Release id (see `ota status`)."),
    click.option("--kind", type=click.Choice(["firmware", "model"]), default=None),
    click.option("--board", default=None),
]


def _selecting(func: Callable[..., None]) -> Callable[..., None]:
    """The options that pick a release: --release, or --kind/--board (the newest)."""
    for option in reversed(_select):
        func = option(func)
    return func


@ota.command(help="Offer a release to P % of devices (default: the newest release of --kind/--board).")
@click.option("--percent", type=float, required=True)
@click.option("--resume", is_flag=True, help="Also lift a halt.")
@_selecting
def rollout(
    percent: float, resume: bool, release_id: int | None, kind: str | None, board: str | None
) -> None:
    from microclaw.gateway import otastore

    settings = load_settings_or_exit()
    engine = _engine(settings)
    try:
        row = otastore.set_rollout(
            engine, percent, release_id=release_id, kind=kind, board=board, resume=resume
        )
    except otastore.OtaError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    console.print(
        f"release {row.id} ({row.kind} {row.version}, {row.board}) at {row.percent:g} %", highlight=False
    )


@ota.command(help="Halt a release: devices are offered it no longer.")
@click.option("--reason", default="halted by the operator", show_default=True)
@_selecting
def halt(reason: str, release_id: int | None, kind: str | None, board: str | None) -> None:
    from microclaw.gateway import otastore

    settings = load_settings_or_exit()
    engine = _engine(settings)
    try:
        row, changed = otastore.halt(engine, reason, release_id=release_id, kind=kind, board=board)
    except otastore.OtaError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    what = "halted" if changed else "was already halted"
    console.print(
        f"release {row.id} ({row.kind} {row.version}) {what}: {row.halt_reason}",
        highlight=False,
        soft_wrap=True,
    )


def _stages(per_stage: dict[float | None, tuple[int, int]]) -> str:
    if not per_stage:
        return "-"
    parts = []
    for stage, (ok, failed) in sorted(per_stage.items(), key=lambda i: (i[0] is None, i[0] or 0)):
        label = f"{stage:g}%" if stage is not None else "other"
        parts.append(f"{label}: {ok} ok / {failed} failed")
    return "; ".join(parts)


@ota.command(help="Releases: rollout percent, halted and why, results per cohort.")
def status() -> None:
    from microclaw.gateway import otastore

    settings = load_settings_or_exit()
    engine = _engine(settings)
    try:
        rows = otastore.status(engine)
    finally:
        engine.dispose()
    if not rows:
        console.print("no releases published")
        return
    table = Table("id", "kind", "board", "version", "min", "percent", "state", "results per cohort")
    for item in rows:
        r = item.release
        state = f"halted: {r.halt_reason}" if r.halted else ("live" if r.percent > 0 else "not rolled out")
        table.add_row(
            str(r.id),
            r.kind,
            r.board,
            r.version,
            r.min_version,
            f"{r.percent:g}",
            state,
            _stages(item.per_stage),
        )
    print_table(table)
