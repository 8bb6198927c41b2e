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
