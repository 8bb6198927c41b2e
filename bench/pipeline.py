"""Pipeline benchmark: latency, throughput and idle cost of the real process stack.

For each broker (the embedded SQLite broker, then Redis on 127.0.0.1, installed from Debian's
packages when absent) it starts the host, a router worker (pool 5), the outbound worker and
beat, then measures:

- inbound-to-agent-start latency: messages arrive one at a time (as a connector delivers
  them); latency is the run's start minus the moment the message entered `ingest()`;
- end-to-end throughput: a burst of messages over many groups, timed from the first ingest to
  the last reply delivered to the local mailbox, with the scripted agent;
- idle CPU (% of one core) and RSS per process, sampled over a quiet window, and the idle
  CPU of each broker consumer (the Celery worker main processes, with their heartbeats, task
  events and beat's upkeep tasks);
- the idle CPU of a bare consumer of the SQLite broker (kombu, 4 queues, nothing published):
  the broker's own idle cost.

Workers run with the Procfile's flags (``microclaw-worker``; heartbeats, task events and remote
control on), one process per role as in ``Procfile.scale`` so Redis runs the same layout, with the
default backstop poll (``broker.polling_interval``): on SQLite a publish rings the consumers'
doorbells, so the poll interval is not what sets latency.

Run from the repository root: ``.venv/bin/python bench/pipeline.py`` (or ``make bench``).
Targets on a 2-core machine: SQLite p50 <= 50 ms, p99 <= 150 ms, idle CPU <= 5 % per process,
>= 200 messages/s. The script prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from microclaw.envelope import make_envelope
from microclaw.pipeline.inbound import ingest_and_kick
from microclaw.runtime import heap
from microclaw.store import groups
from microclaw.store.db import read_tx, write_tx
from microclaw.store.models import Message, Run
from tests.integration.stack import Stack, start_redis, wait_for


class ProcfileStack(Stack):
    """The test stack, with workers started with the Procfile's flags (no ``--without-*``)."""

    def worker(self, name: str, queue_names: str, concurrency: int = 2):  # type: ignore[no-untyped-def]
        argv = [str(Path(sys.executable).parent / "microclaw-worker")]
        argv += ["-Q", queue_names, "-n", f"{name}@%h", "-c", str(concurrency), "-l", "INFO"]
        return self._spawn(name, argv)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ensure_redis() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    print("redis-server not found; installing Debian's redis-server package", flush=True)
    sudo = [] if Path("/proc/self").stat().st_uid == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
        check=True,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def register_groups(stack: Stack, count: int) -> list[str]:
    chats = [f"local:b{i:03d}" for i in range(count)]
    with write_tx(stack.engine) as conn:
        for i, chat in enumerate(chats):
            groups.register_group(
                conn, jid=chat, name=chat, folder=f"local_b{i:03d}", trigger="@Andy", requires_trigger=False
            )
    return chats


def measure_latency(stack: Stack, chats: list[str], count: int, gap_s: float) -> list[float]:
    start_seq = _max_seq(stack)
    for i in range(count):
        chat = chats[i % len(chats)]
        env = make_envelope(source="local", message_id=f"{chat}:lat:{i}", chat_id=chat, text=f"lat {i}")
        ingest_and_kick(stack.engine, env, stack.kick)
        time.sleep(gap_s)
    wait_for(lambda: _runs_covering(stack, start_seq) >= count, 120, "latency runs to finish", interval=0.2)
    with read_tx(stack.engine) as conn:
        msgs = conn.execute(select(Message.__table__).where(Message.__table__.c.seq > start_seq)).all()
        runs = conn.execute(select(Run.__table__).where(Run.__table__.c.to_seq > start_seq)).all()
    by_chat = defaultdict(list)
    for run in runs:
        by_chat[run.chat_jid].append(run)
    latencies = []
    for msg in msgs:
        run = min(
            (r for r in by_chat[msg.chat_jid] if r.prev_cursor_seq < msg.seq <= r.to_seq),
            key=lambda r: r.started_at,
        )
        latencies.append(run.started_at * 1000 - msg.received_at_ms)
    return latencies


def _max_seq(stack: Stack) -> int:
    with read_tx(stack.engine) as conn:
        return int(
            conn.execute(select(Message.__table__.c.seq).order_by(Message.__table__.c.seq.desc())).scalar()
            or 0
        )


def _runs_covering(stack: Stack, after_seq: int) -> int:
    with read_tx(stack.engine) as conn:
        rows = (
            conn.execute(
                select(Run.__table__.c.message_count).where(
                    Run.__table__.c.to_seq > after_seq, Run.__table__.c.status == "done"
                )
            )
            .scalars()
            .all()
        )
    return sum(rows)


def measure_throughput(stack: Stack, chats: list[str], count: int, producers: int) -> tuple[float, int]:
    before = stack.mailbox.count()
    last = {}

    def produce(k: int) -> None:
        for i in range(k, count, producers):
            chat = chats[i % len(chats)]
            text = f"tp {i}"
            last[chat] = text
            env = make_envelope(source="local", message_id=f"{chat}:tp:{i}", chat_id=chat, text=text)
            ingest_and_kick(stack.engine, env, stack.kick)

    started = time.perf_counter()
    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    produced = time.perf_counter() - started

    def done() -> bool:
        seen = {item.chat_id: item.text for item in stack.mailbox.after(0, limit=1_000_000)}
        return all(text in seen.get(chat, "") for chat, text in last.items())

    wait_for(done, 300, "the burst to be answered", interval=0.05)
    elapsed = time.perf_counter() - started
    print(f"    (producers took {produced:.2f} s; {stack.mailbox.count() - before} replies delivered)")
    return count / elapsed, stack.mailbox.count() - before


def measure_idle(stack: Stack, window_s: float) -> list[tuple[str, int, float, float]]:
    procs = []
    for name, popen in stack.procs.items():
        parent = psutil.Process(popen.pid)
        # honcho-less stack: the Popen is the process itself (celery main), plus prefork children.
        for i, proc in enumerate([parent, *parent.children(recursive=True)]):
            procs.append((name if i == 0 else f"{name}/child{i}", proc))
    first = {id(p): p.cpu_times() for _, p in procs}
    time.sleep(window_s)
    rows = []
    for label, proc in procs:
        t0, t1 = first[id(proc)], proc.cpu_times()
        cpu = (t1.user + t1.system - t0.user - t0.system) / window_s * 100
        rows.append((label, proc.pid, cpu, proc.memory_info().rss / 2**20))
    return rows


CONSUMER = """
import sys, time
from kombu import Connection, Queue
from microclaw.broker.transport import celery_broker_options
url, interval, window = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
opts = celery_broker_options(url, interval)
conn = Connection(opts["broker_url"], transport=opts["broker_transport"],
                  transport_options=opts["broker_transport_options"])
queues = [Queue(f"idle{i}") for i in range(4)]
with conn.Consumer(queues, callbacks=[lambda body, message: message.ack()]):
    settle = time.monotonic() + 3
    while time.monotonic() < settle:
        try:
            conn.drain_events(timeout=1)
        except Exception:
            pass
    used, started = time.process_time(), time.monotonic()
    while time.monotonic() - started < window:
        try:
            conn.drain_events(timeout=window)
        except Exception:
            pass
    print(100 * (time.process_time() - used) / window)
"""


def bare_consumer_idle(polling_interval: float, window_s: float) -> float:
    """% of a core a bare kombu consumer of 4 queues spends on the SQLite broker when nothing is
    published: the broker's own idle cost, without Celery's timers, heartbeats and beat."""
    root = Path(tempfile.mkdtemp(prefix="mc-bench-consumer-"))
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CONSUMER,
                f"sqla+sqlite:///{root / 'broker.db'}",
                str(polling_interval),
                str(window_s),
            ],
            capture_output=True,
            text=True,
            timeout=window_s + 60,
            check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench(broker: str, args: argparse.Namespace) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix=f"mc-bench-{broker}-"))
    redis_proc = None
    overrides = {
        "MICROCLAW_ROUTER__MAX_MESSAGES_PER_PROMPT": "100000",
        "MICROCLAW_AGENT__SCRIPTED_MODE": "echo",
        "MICROCLAW_LOGGING__LEVEL": "WARNING",
        "MICROCLAW_BEAT__TICK_INTERVAL_S": "1",
        "MICROCLAW_BEAT__SWEEP_INTERVAL_S": "5",
        "MICROCLAW_BEAT__STALE_AFTER_S": "10",
        "MICROCLAW_ROUTER__LEASE_TTL_S": "60",
        "MICROCLAW_BROKER__POLLING_INTERVAL": str(args.polling_interval),
    }
    if broker == "redis":
        redis_proc, url = start_redis(ensure_redis(), root)
        overrides["MICROCLAW_BROKER__URL"] = url
    stack = ProcfileStack(root, **overrides)
    try:
        stack.host()
        stack.router("router", 5)
        stack.outbound()
        stack.beat()
        stack.wait_host()
        stack.wait_workers(2)
        chats = register_groups(stack, args.groups)
        time.sleep(2)  # let pool children and beat settle
        # This process stands in for the host (it ingests): like the host, it freezes what it
        # built so far, or its own full collections (~100 ms here) would count as latency.
        heap.freeze()
        print(
            f"[{broker}] latency: {args.latency_messages} messages, one every {args.gap * 1000:.0f} ms",
            flush=True,
        )
        lat = measure_latency(stack, chats, args.latency_messages, args.gap)
        print(f"[{broker}] throughput: burst of {args.burst} messages over {args.groups} groups", flush=True)
        rate, replies = measure_throughput(stack, chats, args.burst, args.producers)
        time.sleep(3)
        print(f"[{broker}] idle: sampling CPU and RSS for {args.idle_window:.0f} s", flush=True)
        idle = measure_idle(stack, args.idle_window)
        return {"latency": lat, "rate": rate, "replies": replies, "idle": idle}
    finally:
        stack.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default="sqlite,redis")
    parser.add_argument("--latency-messages", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.03, help="seconds between latency messages")
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--idle-window", type=float, default=15.0)
    parser.add_argument(
        "--polling-interval", type=float, default=1.0, help="SQLite backstop poll (the setting's default)"
    )
    parser.add_argument(
        "--consumer-window", type=float, default=60.0, help="seconds of a bare consumer's idle CPU (0: skip)"
    )
    args = parser.parse_args()
    print(f"machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB", flush=True)
    results = {b: bench(b, args) for b in args.brokers.split(",")}
    if args.consumer_window > 0:
        bare = bare_consumer_idle(args.polling_interval, args.consumer_window)
    print()
    for broker, r in results.items():
        lat = r["latency"]
        print(f"== {broker} ==")
        print(
            f"inbound -> agent start latency: p50 {statistics.median(lat):.1f} ms, "
            f"p99 {percentile(lat, 99):.1f} ms, max {max(lat):.1f} ms (n={len(lat)})"
        )
        print(
            f"end-to-end throughput: {r['rate']:.0f} messages/s "
            f"({args.burst} messages, {r['replies']} replies)"
        )
        print("idle cost per process (CPU % of one core, RSS MiB):")
        for label, pid, cpu, rss in r["idle"]:
            print(f"    {label:<22} pid {pid:<7} cpu {abs(cpu):5.2f} %   rss {rss:6.1f} MiB")
        consumers = [abs(cpu) for label, _pid, cpu, _rss in r["idle"] if label in ("router", "outbound")]
        print(f"idle CPU per broker consumer (worker main): {statistics.mean(consumers):.2f} % of a core")
        print()
    if args.consumer_window > 0:
        print(
            f"idle CPU of a bare SQLite broker consumer (4 queues, {args.polling_interval:g} s backstop, "
            f"{args.consumer_window:.0f} s): {bare:.3f} % of a core"
        )


if __name__ == "__main__":
    main()
