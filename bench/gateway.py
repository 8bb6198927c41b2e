"""Gateway benchmark: many simulated devices over mutual TLS on loopback, one real gateway process.

Devices are paired in bulk through the CA and the store (the same rows pairing writes, no
claim per device), then each holds one WebSocket session from this process. Reported:
- connect storm: every device connects at once (TLS with client certificate, hello, welcome);
- gateway memory: RSS of the gateway process before and after, per device;
- device -> durable: a device's ``message`` until its ``ack`` (stored + kick published), p50/p99;
- device -> agent start: a device's ``message`` until a router worker (one real Celery worker,
  scripted model) starts the agent run that covers it (``runs.started_at``), p50/p99;
- reply -> device: a `DeviceLog.append` (what the device connector does) until the device has
  the event, p50/p99;
- replay: events per second replayed to one device that reconnects with 5,000 missed events;
- restart: SIGKILL of the gateway, restart, until every device has reconnected and resumed.

Run: ``.venv/bin/python bench/gateway.py [--devices 1000]``. Targets (issue 14): 1,000 devices
in <= 150 MB gateway RSS; device -> agent start p50 <= 25 ms; all reconnected within 10 s.
The handshake limit is raised for the storm (a loaded machine is not an attack). Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from microclaw.config import load_settings  # noqa: E402
from microclaw.gateway.ca import DeviceCA  # noqa: E402
from microclaw.gateway.devicelog import DeviceLog  # noqa: E402
from microclaw.gateway.pairing import chat_of, folder_of  # noqa: E402
from microclaw.gateway.simulator import DeviceSimulator, make_csr  # noqa: E402
from microclaw.runtime import queues  # noqa: E402
from microclaw.runtime.wiring import app_engine, bootstrap_database  # noqa: E402
from microclaw.store import devices, groups  # noqa: E402
from microclaw.store.db import now_ms, read_tx, write_tx  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Children:
    """Every process the bench starts, each in a process group of its own (a gateway's migration
    child, or anything a worker starts, goes with it), all stopped however the bench ends: a
    process left running would hold the data directory, the port, or a pipe the bench's output
    goes to. Children read nothing (stdin is /dev/null) and write only to their logs."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """``sig`` to the process's group, SIGKILL if it has not exited within ``timeout``; then
        SIGKILL to whatever of its group outlived it (the group id stays taken while any does)."""
        self.procs.remove(proc)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


class Client:
    """One device's session: records when acks and events arrive."""

    def __init__(self, sim: DeviceSimulator) -> None:
        self.sim = sim
        self.ws: ClientConnection | None = None
        self.acks: dict[str, float] = {}
        self.events: dict[int, float] = {}
        self.last_seq = 0
        self.reader: asyncio.Task[None] | None = None

    async def open(self, url: str) -> None:
        self.ws = await connect(
            url, ssl=self.sim.ssl_context(), compression=None, open_timeout=60, ping_interval=None
        )
        hello = {"type": "device.hello", "device_id": self.sim.device_id, "last_seen_seq": self.last_seq}
        await self.ws.send(json.dumps(hello))
        welcome = json.loads(await self.ws.recv())
        assert welcome["type"] == "welcome", welcome
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame["type"] == "ack":
                self.acks[frame["message_id"]] = time.perf_counter()
            elif frame["type"] == "event":
                self.events[frame["seq"]] = time.perf_counter()
                self.last_seq = max(self.last_seq, frame["seq"])

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()


async def wait_until(predicate: Any, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)


def provision(root: Path, env: dict[str, str], count: int) -> tuple[list[DeviceSimulator], str]:
    os.environ.update(env)
    settings = load_settings()
    bootstrap_database(settings)
    ca = DeviceCA.load_or_create(settings.data_dir / "gateway", sans=("127.0.0.1",))
    engine = app_engine(settings)
    sims = []
    with write_tx(engine) as conn:
        for i in range(count):
            device_id = f"bench-{i:05d}"
            key = ec.generate_private_key(ec.SECP256R1())
            issued = ca.sign_csr(make_csr(device_id, key), device_id=device_id, days=1)
            devices.save_device(
                conn,
                device_id=device_id,
                name=device_id,
                chat_jid=chat_of(device_id),
                cert_serial=issued.serial,
                cert_fingerprint=issued.fingerprint,
                now_ms=now_ms(),
            )
            groups.register_group(
                conn,
                jid=chat_of(device_id),
                name=device_id,
                folder=folder_of(device_id),
                trigger="@Andy",
                requires_trigger=False,
            )
            sim = DeviceSimulator(
                root / "nvs" / f"{device_id}.json", "", device_id=device_id, ca_pem=ca.ca_pem
            )
            sim.nvs.data["key_pem"] = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            sim.nvs.data["cert_pem"] = issued.pem
            sim.nvs.save()
            sims.append(sim)
    engine.dispose()
    return sims, str(settings.data_dir)


def start_router(children: Children, root: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """One router worker as the Procfile runs it (threads pool), waiting for its heartbeat."""
    argv = [str(BIN / "celery"), "-A", "workers.app", "worker", "-Q", queues.ROUTER, "-n", "router@%h"]
    proc = children.start(
        [*argv, "-P", "threads", "-c", "4", "-l", "WARNING"], env=env, cwd=root, log=root / "router.log"
    )
    os.environ.update(env)
    engine = app_engine(load_settings())
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            with read_tx(engine) as conn:
                if conn.execute(
                    text("SELECT 1 FROM worker_heartbeats WHERE pid = :p"), {"p": proc.pid}
                ).first():
                    return proc
            time.sleep(0.2)
    finally:
        engine.dispose()
    raise RuntimeError("the router worker did not report ready")


def agent_start_latencies(
    data_env: dict[str, str], sent: dict[str, float], timeout: float = 120
) -> list[float]:
    """For each message id sent at wall time ``sent[id]``: when the run covering it started."""
    os.environ.update(data_env)
    engine = app_engine(load_settings())
    deadline = time.monotonic() + timeout
    try:
        while True:
            with read_tx(engine) as conn:
                rows = conn.execute(
                    text(
                        "SELECT m.id, min(r.started_at) FROM messages m JOIN runs r"
                        " ON r.chat_jid = m.chat_jid AND r.prev_cursor_seq < m.seq AND m.seq <= r.to_seq"
                        " GROUP BY m.id"
                    )
                ).all()
            started = {str(r[0]): float(r[1]) for r in rows if str(r[0]) in sent}
            if len(started) == len(sent) or time.monotonic() > deadline:
                return [started[k] - sent[k] for k in started]
            time.sleep(0.2)
    finally:
        engine.dispose()


def start_gateway(children: Children, root: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = children.start(
        [str(BIN / "microclaw-gateway"), "run"], env=env, cwd=root, log=root / "gateway.log"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("gateway did not start")


async def bench(count: int, sample: int) -> None:
    children = Children()
    try:
        await run(children, count, sample)
    finally:
        children.stop_all()


async def run(children: Children, count: int, sample: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="mc-gw-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "MICROCLAW_DATA_DIR": str(root / "data"),
        "MICROCLAW_HTTP__PORT": str(free_port()),
        "MICROCLAW_GATEWAY__HOST": "127.0.0.1",
        "MICROCLAW_GATEWAY__PORT": str(port),
        "MICROCLAW_GATEWAY__SANS": '["127.0.0.1"]',
        "MICROCLAW_GATEWAY__MAX_PREAUTH_CONNECTIONS": str(max(64, count)),
        "MICROCLAW_GATEWAY__HANDSHAKE_TIMEOUT_S": "60",
        "MICROCLAW_AGENT__PROVIDER": "scripted",
        "MICROCLAW_AGENT__SCRIPTED_MODE": "echo",
        "MICROCLAW_LOGGING__LEVEL": "WARNING",
        "MICROCLAW_BROKER__POLLING_INTERVAL": "0.1",
        "MICROCLAW_SENDER_ALLOWLIST_PATH": str(root / "sender-allowlist.json"),
        "MICROCLAW_MOUNT_ALLOWLIST_PATH": str(root / "mount-allowlist.json"),
    }
    t0 = time.perf_counter()
    sims, data_dir = provision(root, env, count)
    print(f"provisioned {count} devices in {time.perf_counter() - t0:.1f} s")
    router = start_router(children, root, env)
    url = f"wss://127.0.0.1:{port}"
    gateway = start_gateway(children, root, env, port)
    proc = psutil.Process(gateway.pid)
    await asyncio.sleep(0.5)
    rss0 = proc.memory_info().rss
    clients = [Client(s) for s in sims]

    t0 = time.perf_counter()
    await asyncio.gather(*(c.open(url) for c in clients))
    storm = time.perf_counter() - t0
    await asyncio.sleep(2)  # settled: the gateway trims its heap once connections stop changing
    rss1 = proc.memory_info().rss
    print(f"connect storm: {count} devices in {storm:.2f} s")
    print(
        f"gateway RSS: {rss0 / 2**20:.1f} MB idle -> {rss1 / 2**20:.1f} MB with {count} sessions "
        f"({(rss1 - rss0) / count / 1024:.1f} KB per device)"
    )

    chosen = clients[:sample]
    latencies = []
    sent: dict[str, float] = {}
    for i, c in enumerate(chosen):
        assert c.ws is not None
        mid = f"b{i}"
        sent[f"{chat_of(c.sim.device_id)}:{mid}"] = time.time()
        start = time.perf_counter()
        await c.ws.send(json.dumps({"type": "message", "message_id": mid, "text": "ping"}))
        await wait_until(lambda c=c, mid=mid: mid in c.acks, 30)
        latencies.append(c.acks[mid] - start)
    print(
        f"device -> durable (ack): p50 {pct(latencies, 0.5):.1f} ms,"
        f" p99 {pct(latencies, 0.99):.1f} ms (n={sample})"
    )
    starts = await asyncio.to_thread(agent_start_latencies, env, sent)
    print(
        f"device -> agent start (router worker): p50 {pct(starts, 0.5):.1f} ms,"
        f" p99 {pct(starts, 0.99):.1f} ms (n={len(starts)} of {sample})"
    )
    children.stop(router)

    log = DeviceLog.in_data_dir(Path(data_dir))
    latencies = []
    for i, c in enumerate(chosen):
        seq = c.last_seq + 1
        start = time.perf_counter()
        await asyncio.to_thread(
            log.append, c.sim.device_id, "message", {"text": "pong"}, idempotency_key=f"r{i}"
        )
        await wait_until(lambda c=c, seq=seq: seq in c.events, 30)
        latencies.append(c.events[seq] - start)
    print(
        f"reply -> device (log append -> event): p50 {pct(latencies, 0.5):.1f} ms, "
        f"p99 {pct(latencies, 0.99):.1f} ms (n={sample})"
    )

    target = clients[-1]
    await target.close()
    missed = 5000
    base = target.last_seq
    for i in range(missed):
        log.append(target.sim.device_id, "message", {"text": f"missed {i}"}, idempotency_key=f"m{i}")
    t0 = time.perf_counter()
    await target.open(url)
    await wait_until(lambda: target.last_seq >= base + missed, 60)
    replay = time.perf_counter() - t0
    print(f"replay: {missed} events in {replay:.2f} s ({missed / replay:.0f} events/s)")

    children.stop(gateway, signal.SIGKILL)
    for c in clients:
        if c.reader is not None:
            c.reader.cancel()
    t0 = time.perf_counter()
    gateway = start_gateway(children, root, env, port)
    await asyncio.gather(*(c.open(url) for c in clients))
    print(
        f"restart: SIGKILL -> all {count} devices reconnected and resumed"
        f" in {time.perf_counter() - t0:.2f} s (including the gateway's own start)"
    )
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    children.stop(gateway)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(bench(args.devices, min(args.sample, args.devices)))


if __name__ == "__main__":
    main()
