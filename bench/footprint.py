"""Footprint benchmark: what the default stack costs to start, to keep idle, and to call a tool.

Starts ``honcho start`` on the repository's Procfile (or ``--procfile``) in a fresh data
directory with the scripted model, as ``make run`` does, and prints:

- cold start to the first reply: wall seconds from spawning honcho until the reply to one
  ``POST /api/chat`` arrives (the migration of a fresh database included), and the CPU-seconds
  every process of the stack spent until then;
- idle PSS of all processes (``psutil`` ``memory_full_info().pss``; shared pages counted once),
  after the stack settled, with the count of processes and the PSS per process;
- idle CPU over ``--idle-window`` seconds (default 60), as % of one core, all processes summed;
- first tool call over a warm one (needs Docker and ``--image``): the time of a sandbox
  ``exec`` in a group whose container is not running, (a) cold, and (b) after a fire-and-forget
  ``microclaw.sandbox.ensure`` sent ``--model-latency`` seconds earlier (what the router does
  when a run starts, in parallel with the first model call), each minus a warm ``exec``.

Run from the repository root: ``.venv/bin/python bench/footprint.py``.
Targets (issue 11, 2-core machine): cold start <= 3 s and <= 4 CPU-s; idle PSS <= 200 MB;
idle CPU <= 1 % of a core; first tool call <= 100 ms over a warm one. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_env(root: Path, image: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROCLAW_")}
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        MICROCLAW_DATA_DIR=str(root / "data"),
        MICROCLAW_HTTP__PORT=str(free_port()),
        MICROCLAW_SENDER_ALLOWLIST_PATH=str(root / "sender-allowlist.json"),
        MICROCLAW_MOUNT_ALLOWLIST_PATH=str(root / "mount-allowlist.json"),
        MICROCLAW_AGENT__PROVIDER="scripted",
        MICROCLAW_SANDBOX__IMAGE=image,
        MICROCLAW_LOGGING__LEVEL="WARNING",
        MICROCLAW_TIMEZONE="UTC",
    )
    return env


def tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def first_reply(base: str, data_dir: Path, deadline: float) -> None:
    token_file = data_dir / "http-token"
    sent = False
    with httpx.Client(base_url=base, timeout=5) as client:
        while time.monotonic() < deadline:
            if not token_file.exists():
                time.sleep(0.02)
                continue
            client.headers["Authorization"] = f"Bearer {token_file.read_text().strip()}"
            try:
                if not sent:
                    r = client.post("/api/chat", json={"text": "hello"})
                    if r.status_code not in (200, 202):
                        time.sleep(0.02)
                        continue
                    sent = True
                r = client.get("/api/chat/replies", params={"after": 0, "wait": 2})
            except httpx.HTTPError:
                time.sleep(0.02)
                continue
            if r.status_code == 200 and r.json().get("replies"):
                return
        raise SystemExit("no reply before the deadline; see the honcho log")


def tool_calls(env: dict[str, str], model_latency: float, rounds: int) -> dict[str, float] | None:
    """(cold exec, pre-warmed exec, warm exec) in ms, median over ``rounds`` fresh groups."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from microclaw.config import load_settings
        from microclaw.runtime import queues
        from microclaw.runtime.celery_app import create_app
        from microclaw.sandbox.client import SandboxClient

        settings = load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    app = create_app(settings)
    client = SandboxClient(app, settings.sandbox)
    argv = ["true"]
    cold, prewarmed, warm = [], [], []
    try:
        client.exec("bench_probe", argv)
    except Exception as exc:
        print(f"first tool call: skipped (sandbox not usable: {exc})")
        return None
    for i in range(rounds):
        group = f"bench_cold_{i}"
        (settings.groups_dir / group).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        client.exec(group, argv)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.exec(group, argv)
        warm.append(time.perf_counter() - t0)
        group = f"bench_pre_{i}"
        (settings.groups_dir / group).mkdir(parents=True, exist_ok=True)
        app.send_task(
            queues.SANDBOX_ENSURE,
            kwargs={"group": group, "is_main": False, "extra_mounts": []},
            queue=queues.SANDBOX,
            ignore_result=True,
        )
        time.sleep(model_latency)  # the first model call, running meanwhile
        t0 = time.perf_counter()
        client.exec(group, argv)
        prewarmed.append(time.perf_counter() - t0)
    ms = {
        "cold": statistics.median(cold) * 1000,
        "prewarmed": statistics.median(prewarmed) * 1000,
        "warm": statistics.median(warm) * 1000,
    }
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procfile", default=str(ROOT / "Procfile"))
    parser.add_argument("--idle-window", type=float, default=60.0, help="seconds of idle CPU sampling")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait after the reply")
    parser.add_argument("--image", default="microclaw-sandbox-test:latest")
    parser.add_argument("--model-latency", type=float, default=1.0, help="simulated first model call, s")
    parser.add_argument("--tool-rounds", type=int, default=3)
    parser.add_argument("--no-tools", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="microclaw-footprint-"))
    env = stack_env(root, args.image)
    base = f"http://127.0.0.1:{env['MICROCLAW_HTTP__PORT']}"
    log = open(root / "honcho.log", "wb")  # noqa: SIM115
    t0 = time.monotonic()
    honcho = subprocess.Popen(
        [str(BIN / "honcho"), "-f", args.procfile, "-d", str(ROOT), "start"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    top = psutil.Process(honcho.pid)
    try:
        first_reply(base, root / "data", t0 + 120)
        wall = time.monotonic() - t0
        procs = tree(top)
        cpu = cpu_s(procs)
        print(f"procfile: {args.procfile}")
        print(f"cold start to first reply: {wall:.2f} s wall, {cpu:.2f} CPU-s ({len(procs)} processes)")
        for p in procs:
            spent = cpu_s([p])
            if spent >= 0.05:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    print(f"  {spent:5.2f} CPU-s  {p.pid} {' '.join(p.cmdline()[1:4])[:60]}")

        time.sleep(args.settle)
        procs = tree(top)
        pss: dict[str, float] = {}
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                name = " ".join(p.cmdline()[1:4])[:60] or p.name()
                pss[f"{p.pid} {name}"] = p.memory_full_info().pss / 2**20
        print(f"idle PSS: {sum(pss.values()):.0f} MB in {len(pss)} processes")
        for name, mb in sorted(pss.items(), key=lambda kv: -kv[1]):
            print(f"  {mb:7.1f} MB  {name}")

        before = {p.pid: cpu_s([p]) for p in procs}
        time.sleep(args.idle_window)
        after = {p.pid: cpu_s([p]) for p in procs}
        used = sum(after.values()) - sum(before.values())
        print(f"idle CPU over {args.idle_window:.0f} s: {100 * used / args.idle_window:.2f} % of one core")
        for p in procs:
            share = 100 * (after[p.pid] - before[p.pid]) / args.idle_window
            if share >= 0.005:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    print(f"  {share:5.2f} %  {p.pid} {' '.join(p.cmdline()[1:4])[:60]}")

        if not args.no_tools and shutil.which("docker"):
            ms = tool_calls(env, args.model_latency, args.tool_rounds)
            if ms is not None:
                print(
                    f"first tool call: cold {ms['cold']:.0f} ms, warm {ms['warm']:.0f} ms"
                    f" (+{ms['cold'] - ms['warm']:.0f} ms); after an early ensure"
                    f" {args.model_latency:.1f} s before: {ms['prewarmed']:.0f} ms"
                    f" (+{ms['prewarmed'] - ms['warm']:.0f} ms)"
                )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
        print(f"(logs: {root / 'honcho.log'})")


if __name__ == "__main__":
    main()
