"""The Procfile's gateway line (``microclaw-gateway run --if-enabled``): with ``[gateway]
enabled`` false (the default) it serves nothing and stays up as a ``sleep`` process, so a stack
without devices pays nothing for it and honcho does not stop the stack; enabled, it serves."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.conftest import base_env
from tests.integration.stack import BIN, wait_for

pytestmark = pytest.mark.slow


def _start(tmp_path: Path, **overrides: str) -> tuple[subprocess.Popen[bytes], int]:
    env = base_env(tmp_path, **overrides)
    port = int(env["MICROCLAW_GATEWAY__PORT"])
    log = open(tmp_path / "gateway.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [str(BIN / "microclaw-gateway"), "run", "--if-enabled"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, port


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _stop(proc: subprocess.Popen[bytes]) -> int:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    return proc.wait(timeout=30)


def test_disabled_gateway_idles_as_sleep_without_a_port(tmp_path: Path) -> None:
    proc, port = _start(tmp_path)
    try:
        wait_for(lambda: psutil.Process(proc.pid).name() == "sleep", 30, "the gateway to idle as sleep")
        assert proc.poll() is None and not _listening(port)
        assert "device gateway off" in (tmp_path / "gateway.log").read_text()
    finally:
        _stop(proc)


def test_enabled_gateway_serves(tmp_path: Path) -> None:
    proc, port = _start(tmp_path, MICROCLAW_GATEWAY__ENABLED="true")
    try:
        wait_for(lambda: _listening(port), 60, "the gateway's port")
        assert psutil.Process(proc.pid).name() != "sleep"
    finally:
        _stop(proc)
