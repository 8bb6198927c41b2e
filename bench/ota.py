"""OTA benchmark: manifests and images over HTTPS with client certificates, one real gateway.

Devices are provisioned in bulk like bench/gateway.py (certificates from the CA, rows in the
store; each "said hello" with a board and firmware 1.0.0), a firmware image is published and
rolled out to 100 %. Reported:
- manifest: ``GET /ota/manifest`` per device (a new TLS connection with the client
  certificate each time, as the firmware does), p50/p99 and requests per second;
- image: concurrent ``GET /ota/image/<sha256>`` downloads, MB/s in total and the gateway's RSS
  before and at the end (each download in flight holds a copy of the image).

Run: ``.venv/bin/python bench/ota.py [--devices 200] [--image-mb 2] [--parallel 16]``.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway import free_port, provision, start_gateway  # noqa: E402
from microclaw.config import load_settings  # noqa: E402
from microclaw.gateway import otastore  # noqa: E402
from microclaw.gateway.simulator import DeviceSimulator  # noqa: E402
from microclaw.runtime.wiring import app_engine  # noqa: E402
from microclaw.store import devices  # noqa: E402
from microclaw.store.db import now_ms, write_tx  # noqa: E402

BOARD = "esp32s3-bench"


def get(sim: DeviceSimulator, port: int, path: str) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=sim.ssl_context(), timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, len(body), time.perf_counter() - t0
    finally:
        conn.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def bench(count: int, image_mb: int, parallel: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="mc-ota-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "MICROCLAW_DATA_DIR": str(root / "data"),
        "MICROCLAW_HTTP__PORT": str(free_port()),
        "MICROCLAW_GATEWAY__HOST": "127.0.0.1",
        "MICROCLAW_GATEWAY__PORT": str(port),
        "MICROCLAW_GATEWAY__SANS": '["127.0.0.1"]',
        "MICROCLAW_LOGGING__LEVEL": "WARNING",
        "MICROCLAW_SENDER_ALLOWLIST_PATH": str(root / "sender-allowlist.json"),
        "MICROCLAW_MOUNT_ALLOWLIST_PATH": str(root / "mount-allowlist.json"),
    }
    sims, _ = provision(root, env, count)
    settings = load_settings()
    engine = app_engine(settings)
    with write_tx(engine) as conn:
        for sim in sims:
            devices.record_session(conn, sim.device_id, online=False, now_ms=now_ms(), fw_version="1.0.0")
            devices.record_session(
                conn, sim.device_id, online=True, now_ms=now_ms(), fw_version="1.0.0", board=BOARD
            )
    image = root / "firmware.bin"
    image.write_bytes(os.urandom(image_mb * 1024 * 1024))
    release = otastore.publish(
        engine,
        settings.data_dir,
        image,
        kind="firmware",
        version="1.1.0",
        board=BOARD,
        key=Ed25519PrivateKey.generate(),
        max_image_bytes=64 * 1024 * 1024,
    )
    otastore.set_rollout(engine, 100, release_id=release.id)
    engine.dispose()
    gateway = start_gateway(root, env, port)
    proc = psutil.Process(gateway.pid)
    try:
        time.sleep(0.5)
        with ThreadPoolExecutor(parallel) as pool:
            t0 = time.perf_counter()
            answers = list(pool.map(lambda s: get(s, port, "/ota/manifest?kind=firmware"), sims))
            elapsed = time.perf_counter() - t0
        assert all(status == 200 for status, _, _ in answers), {a[0] for a in answers}
        latencies = [a[2] for a in answers]
        print(
            f"manifest: {count} requests ({parallel} at a time, new mTLS connection each):"
            f" p50 {pct(latencies, 0.5):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms,"
            f" {count / elapsed:.0f} req/s"
        )
        rss0 = proc.memory_info().rss
        downloads = sims[: min(count, parallel * 2)]
        peak = rss0
        with ThreadPoolExecutor(parallel) as pool:
            t0 = time.perf_counter()
            futures = [pool.submit(get, s, port, f"/ota/image/{release.sha256}") for s in downloads]
            while not all(f.done() for f in futures):
                peak = max(peak, proc.memory_info().rss)
                time.sleep(0.01)
            elapsed = time.perf_counter() - t0
        results = [f.result() for f in futures]
        assert all(status == 200 and size == release.size for status, size, _ in results)
        total_mb = len(results) * release.size / 1e6
        print(
            f"image: {len(results)} downloads of {image_mb} MiB ({parallel} at a time):"
            f" {total_mb / elapsed:.0f} MB/s, p50 {pct([r[2] for r in results], 0.5):.0f} ms each;"
            f" gateway RSS {rss0 / 1e6:.0f} MB before, {peak / 1e6:.0f} MB peak"
        )
    finally:
        gateway.terminate()
        gateway.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--image-mb", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=16)
    args = parser.parse_args()
    bench(args.devices, args.image_mb, args.parallel)


if __name__ == "__main__":
    main()
