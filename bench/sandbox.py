"""Sandbox latency: cold start, warm exec p50/p99, and a ``docker run --rm`` per-call baseline.

Prints figures only (no assertions). Targets from issue 4: warm exec p50 <= 60 ms and at least
10x faster than the per-call baseline (NanoClaw's approach: one ``docker run --rm`` per call).

    .venv/bin/python bench/sandbox.py [--image microclaw-sandbox-test:latest] [--warm 300]

Builds the offline test image first when it is missing. Everything it starts carries a unique
instance label and is removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker

from microclaw.sandbox.base import SandboxConfig
from microclaw.sandbox.docker import DockerBackend
from microclaw.sandbox.service import SandboxService

REPO = Path(__file__).resolve().parents[1]


def pct(samples: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of samples in seconds, returned in ms."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index] * 1000


def report(label: str, samples: list[float]) -> None:
    """One line: p50 and p99 in ms."""
    print(f"{label}: p50 {pct(samples, 50):.2f} ms, p99 {pct(samples, 99):.2f} ms (n={len(samples)})")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="microclaw-sandbox-test:latest")
    parser.add_argument("--docker-url", default="unix:///var/run/docker.sock")
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--baseline", type=int, default=10)
    args = parser.parse_args()

    client = docker.DockerClient(base_url=args.docker_url)
    try:
        client.images.get(args.image)
    except docker.errors.ImageNotFound:
        subprocess.run([str(REPO / "sandbox-image" / "build-test-image.sh"), args.image], check=True)

    root = Path(tempfile.mkdtemp(prefix="mcb-", dir="/tmp"))
    results: dict[str, float] = {}
    services = []
    try:
        for transport in ("socket", "docker"):
            config = SandboxConfig(
                image=args.image,
                docker_url=args.docker_url,
                groups_dir=root / "groups",
                run_dir=root / f"run-{transport}",
                instance=f"bench-{uuid.uuid4().hex[:8]}",
                exec_transport=transport,
                mount_allowlist_path=None,
            )
            service = SandboxService(DockerBackend(config), config, lambda kind, *, group, **data: None)
            services.append(service)
            group = f"bench-{transport}"
            cold = []
            for _ in range(args.cold if transport == "socket" else 1):
                service.stop(group)
                cold.append(timed(lambda s=service, g=group: (s.ensure(g), s.exec(g, ["true"]))))
            n = args.warm if transport == "socket" else max(30, args.warm // 10)
            for _ in range(10):  # settle
                service.exec(group, ["true"])
            warm = [timed(lambda s=service, g=group: s.exec(g, ["true"])) for _ in range(n)]
            echo = [
                timed(lambda s=service, g=group: s.exec(g, ["sh", "-c", "echo hello"])) for _ in range(n // 3)
            ]
            if transport == "socket":
                results["cold_median"] = statistics.median(cold) * 1000
                results["cold_min"] = min(cold) * 1000
            cold_ms = [c * 1000 for c in cold]
            print(
                f"[{transport}] cold start (ensure + first exec): "
                f"median {statistics.median(cold_ms):.1f} ms, min {min(cold_ms):.1f} ms (n={len(cold)})"
            )
            report(f"[{transport}] warm exec `true`", warm)
            report(f"[{transport}] warm exec `sh -c 'echo hello'`", echo)
            results[f"{transport}_p50"] = pct(warm, 50)
            results[f"{transport}_p99"] = pct(warm, 99)

        flags = ["--network", "none", "--read-only", "--cap-drop", "ALL", "--user", "1000:1000"]
        baseline = [
            timed(lambda: subprocess.run(["docker", "run", "--rm", *flags, args.image, "true"], check=True))
            for _ in range(args.baseline)
        ]
        base_p50 = pct(baseline, 50)
        report("[baseline] docker run --rm per call", baseline)
        p50 = results["socket_p50"]
        ratio = base_p50 / p50
        print(
            f"warm p50 {p50:.2f} ms (target <= 60 ms: {'OK' if p50 <= 60 else 'MISSED'}); "
            f"{ratio:.0f}x faster than per-call docker run "
            f"(target >= 10x: {'OK' if ratio >= 10 else 'MISSED'})"
        )
    finally:
        for service in services:
            service.cleanup_orphans()
            service.close()
        shutil.rmtree(root, ignore_errors=True)
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
