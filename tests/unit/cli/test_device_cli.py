"""`microclaw device`: with the gateway off, the commands say so (devices cannot connect)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from microclaw.cli.chat import main


def test_device_list_says_when_the_gateway_is_off(isolated_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROCLAW_GATEWAY__ENABLED", "false")
    off = CliRunner().invoke(main, ["device", "list"])
    assert off.exit_code == 0, off.output
    assert "no devices paired" in off.stdout
    assert "gateway is off" in off.stderr and "gateway is off" not in off.stdout

    monkeypatch.setenv("MICROCLAW_GATEWAY__ENABLED", "true")
    on = CliRunner().invoke(main, ["device", "list"])
    assert on.exit_code == 0, on.output
    assert "gateway is off" not in on.output


def test_device_list_shows_what_each_device_last_reported(
    isolated_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Board and versions come from the device's last hello (OTA targets a board and a version)."""
    from microclaw.config import load_settings
    from microclaw.runtime.wiring import app_engine, bootstrap_database
    from microclaw.store import devices
    from microclaw.store.db import write_tx

    settings = load_settings()
    bootstrap_database(settings)
    engine = app_engine(settings)
    with write_tx(engine) as conn:
        devices.save_device(
            conn,
            device_id="porch-1",
            name="Porch",
            chat_jid="dev:porch-1",
            cert_serial="1",
            cert_fingerprint="f",
            now_ms=1,
        )
        devices.record_session(
            conn,
            "porch-1",
            online=True,
            now_ms=2,
            fw_version="1.2.0",
            model_version="m7",
            board="esp32-s3-box-3",
        )
    engine.dispose()
    result = CliRunner().invoke(main, ["device", "list"])  # not a terminal: nothing may be cut
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "porch-1" in line)
    assert [cell.strip() for cell in row.strip("│┃ ").split("│")][-3:] == ["esp32-s3-box-3", "1.2.0", "m7"]
