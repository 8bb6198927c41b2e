"""A real gateway process (``microclaw-gateway run``) on loopback for the gateway tests, with
the CLI a user runs to claim and revoke devices, and simulated devices from
`microclaw.gateway.simulator`. Timeouts are shortened through settings, never patched."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

from microclaw.gateway.devicelog import DeviceLog
from microclaw.gateway.simulator import DeviceSimulator
from tests.conftest import free_port
from tests.integration.stack import Stack, wait_for

BIN = Path(sys.executable).parent

GATEWAY_FAST = {
    "MICROCLAW_GATEWAY__HOST": "127.0.0.1",
    "MICROCLAW_GATEWAY__HANDSHAKE_TIMEOUT_S": "2",
    "MICROCLAW_GATEWAY__PREAUTH_TIMEOUT_S": "60",
    "MICROCLAW_GATEWAY__HELLO_TIMEOUT_S": "2",
    "MICROCLAW_GATEWAY__PING_INTERVAL_S": "0.3",
    # Not shorter: a device streaming audio to a gateway slowed by a loaded CI machine has its pong
    # queued behind the audio (TCP back-pressure), and a 2 s timeout dropped it mid-listen.
    "MICROCLAW_GATEWAY__PING_TIMEOUT_S": "20",
    "MICROCLAW_GATEWAY__REVOCATION_CHECK_S": "0.2",
    "MICROCLAW_GATEWAY__POLL_INTERVAL_S": "0.02",
    "MICROCLAW_GATEWAY__PAIR_BEGIN_PER_MINUTE": "30",
}


class GatewayRig:
    """A Stack plus its gateway process and helpers to drive it as a user and as devices."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.port = int(stack.env["MICROCLAW_GATEWAY__PORT"])
        self.url = f"wss://127.0.0.1:{self.port}"
        self.data_dir = stack.settings.data_dir

    def start(self) -> None:
        self.stack._spawn("gateway", [str(BIN / "microclaw-gateway"), "run"])
        wait_for(self._listening, 30, "the gateway to listen")

    def kill(self) -> None:
        self.stack.kill("gateway")

    def _listening(self) -> bool:
        proc = self.stack.procs.get("gateway")
        assert proc is not None and proc.poll() is None, "the gateway exited:\n" + self.stack.logs()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    @property
    def ca_pem(self) -> str:
        return (self.data_dir / "gateway" / "ca.pem").read_text()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "microclaw"), "device", *args],
            env=self.stack.env,
            cwd=self.stack.root,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def claim(self, code: str, name: str = "Kitchen") -> None:
        result = self.cli("claim", code, "--name", name)
        assert result.returncode == 0, result.stdout + result.stderr

    def device(self, device_id: str, **kwargs: Any) -> DeviceSimulator:
        return DeviceSimulator(
            self.stack.root / "devices" / f"{device_id}.json",
            self.url,
            device_id=device_id,
            ca_pem=self.ca_pem,
            **kwargs,
        )

    async def paired(self, device_id: str, **kwargs: Any) -> DeviceSimulator:
        sim = self.device(device_id, **kwargs)
        await sim.pair(lambda code: asyncio.to_thread(self.claim, code, device_id.title()))
        return sim

    @property
    def log(self) -> DeviceLog:
        return DeviceLog.in_data_dir(self.data_dir)

    def plain_tls(self) -> ssl.SSLContext:
        """A client trusting the gateway's CA, presenting no certificate."""
        return ssl.create_default_context(cadata=self.ca_pem)


def gateway_env() -> dict[str, str]:
    return {**GATEWAY_FAST, "MICROCLAW_GATEWAY__PORT": str(free_port())}
