"""Firmware core against the real gateway: pairing-to-first-reply time, and replay throughput.

The portable C core (firmware/components/microclaw_core) is built with gcc as a shared library
and driven through ctypes by the host HAL of tests/integration/firmware/coredev.py, against one
real `microclaw-gateway run` process on loopback (real mutual TLS). Reported:
- pairing: a factory-fresh board connects, shows its code; the "user" claims it with the real
  `microclaw device claim` CLI (a process start, ~1 s of it); key + CSR, certificate, reconnect
  with the certificate, hello, welcome;
- first reply: the board says one message; once the gateway has stored it (its ack), the reply
  is appended to the device log the way the `device` connector does (no agent runs here), and
  the board shows it;
- replay: events per second the board processes (seq check, NVS commit of last_seen in a JSON
  file, display) when it reconnects with N missed events.

The gateway's timeouts are the test settings (poll interval 20 ms). Run:
``.venv/bin/python bench/firmware_pairing.py [--runs 3] [--missed 500]``. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from microclaw.gateway.devicelog import DeviceLog  # noqa: E402
from tests.integration.firmware.coredev import CoreDevice, build_core, claim_in_background, load  # noqa: E402
from tests.integration.gateway.harness import GATEWAY_FAST  # noqa: E402
from tests.integration.stack import Stack  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pair_once(
    lib: Any,
    root: Path,
    stack: Stack,
    url: str,
    ca_pem: str,
    device_id: str,
    log: DeviceLog,
    claims: list[float],
) -> tuple[float, float]:
    """A factory-fresh board paired by the claim CLI, then one message and its reply: the seconds
    to welcome and to the reply shown, both from the board's first connection."""

    def claim(code: str) -> None:
        started = time.perf_counter()
        result = subprocess.run(
            [str(BIN / "microclaw"), "device", "claim", code, "--name", device_id],
            env=stack.env, cwd=stack.root, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        claims.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise RuntimeError(result.stdout + result.stderr)

    on_code, failures = claim_in_background(claim)
    start = time.perf_counter()
    dev = CoreDevice(lib, root / device_id, url, ca_pem, device_id, on_code=on_code)
    dev.pump(lambda: bool(dev.welcomed) or bool(failures), timeout=120)
    if failures:
        raise failures[0]
    paired = time.perf_counter()
    dev.say("hello, are you there?")
    dev.pump(lambda: dev.ring_count == 0)  # acked: durable in the app database
    log.append(device_id, "message", {"text": "yes"}, idempotency_key=f"r-{device_id}")
    dev.pump(lambda: dev.last_seen >= 1)
    done = time.perf_counter()
    dev.close()
    return paired - start, done - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--missed", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mc-fw-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        lib = load(build_core(root))
        print(f"core build (gcc -O1, UBSan): {time.perf_counter() - t0:.1f} s")
        port = free_port()
        (root / "stack").mkdir()
        stack = Stack(root / "stack", **GATEWAY_FAST, MICROCLAW_GATEWAY__PORT=str(port))
        stack._spawn("gateway", [str(BIN / "microclaw-gateway"), "run"])
        url = f"wss://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            ca_pem = (stack.settings.data_dir / "gateway" / "ca.pem").read_text()
            log = DeviceLog.in_data_dir(stack.settings.data_dir)
            pairing: list[float] = []
            first_reply: list[float] = []
            claims: list[float] = []
            for run in range(args.runs):
                paired, replied = pair_once(lib, root, stack, url, ca_pem, f"bench-{run}", log, claims)
                pairing.append(paired)
                first_reply.append(replied)
            med = statistics.median
            print(
                f"pairing (fresh board -> welcome), {args.runs} runs: median {med(pairing):.2f} s, "
                f"max {max(pairing):.2f} s (the claim CLI alone: median {med(claims):.2f} s)"
            )
            print(
                f"pairing -> first reply shown: median {med(first_reply):.2f} s, max {max(first_reply):.2f} s"
            )

            dev = CoreDevice(lib, root / "bench-0", url, ca_pem, "bench-0")
            dev.pump(lambda: bool(dev.welcomed))
            dev.disconnect()
            base = dev.last_seen
            for i in range(args.missed):
                log.append("bench-0", "message", {"text": f"missed {i}"}, idempotency_key=f"m-{i}")
            start = time.perf_counter()
            dev.pump(lambda: dev.last_seen == base + args.missed, timeout=300)
            elapsed = time.perf_counter() - start
            rate = args.missed / elapsed
            print(
                f"replay of {args.missed} missed events: {elapsed:.2f} s, {rate:.0f} events/s "
                f"(gaps {dev.gaps}, duplicates {dev.duplicates})"
            )
            print(
                f"offline queue: {dev.ring_slots} messages (the default, MC_RING_DEFAULT_SLOTS); "
                f"{dev.lib.mc_ring_slot_bytes()} storage bytes per slot at most"
            )
            dev.close()
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
