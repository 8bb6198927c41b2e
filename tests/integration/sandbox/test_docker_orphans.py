"""Orphans: labelled leftovers are removed at boot; a worker SIGKILLed mid-exec leaves none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from microclaw.sandbox.docker import DockerBackend
from microclaw.sandbox.service import SandboxService

pytestmark = pytest.mark.docker

WORKER = r"""
import json, sys
from pathlib import Path
from microclaw.sandbox.base import SandboxConfig
from microclaw.sandbox.docker import DockerBackend
from microclaw.sandbox.service import SandboxService
settings = json.loads(sys.argv[1])
for key in ("groups_dir", "run_dir", "mount_allowlist_path"):
    settings[key] = Path(settings[key])
config = SandboxConfig(**settings)
service = SandboxService(DockerBackend(config), config, lambda kind, *, group, **data: None)
service.exec("alpha", ["sh", "-c", "touch /workspace/group/started; sleep 60"], timeout=120)
"""


def _settings(sb) -> dict:
    c = sb.config
    return {
        "image": c.image,
        "groups_dir": str(c.groups_dir),
        "run_dir": str(c.run_dir),
        "instance": c.instance,
        "memory": c.memory,
        "mount_allowlist_path": str(c.mount_allowlist_path),
    }


def test_cleanup_removes_running_and_dead_leftovers_of_this_instance_only(
    make_sandbox, docker_client
) -> None:
    ours = make_sandbox()
    other = make_sandbox()
    ours.service.ensure("alpha")
    ours.service.ensure("beta")
    other.service.ensure("alpha")
    ours.container(docker_client, "beta").stop(timeout=0)  # an exited leftover

    rebooted = SandboxService(DockerBackend(ours.config), ours.config, lambda kind, *, group, **data: None)
    try:
        removed = rebooted.cleanup_orphans()
    finally:
        rebooted.close()
    assert sorted(removed) == [ours.service.backend.container_name(g) for g in ("alpha", "beta")]
    label = {"label": f"microclaw.instance={ours.config.instance}"}
    assert docker_client.containers.list(all=True, filters=label) == []
    assert other.container(docker_client, "alpha").status == "running"  # another instance: untouched


def test_sigkilled_worker_leaves_no_orphan_after_restart(make_sandbox, docker_client) -> None:
    sb = make_sandbox()
    started = sb.config.groups_dir / "alpha" / "started"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(_settings(sb))])
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert worker.poll() is None, "worker died before its exec started"
            assert time.monotonic() < deadline, "exec never started"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)  # mid-exec
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    leftover = sb.container(docker_client, "alpha")
    assert leftover.status == "running"  # what the dead worker left behind

    # The restarted worker: orphan cleanup at boot, then business as usual.
    assert sb.service.cleanup_orphans() == [leftover.name]
    assert sb.audited("sandbox.orphan") == [{"group": None, "container": leftover.name}]
    label = {"label": f"microclaw.instance={sb.config.instance}"}
    assert docker_client.containers.list(all=True, filters=label) == []
    result = sb.service.exec("alpha", ["sh", "-c", "ls /workspace/group; echo ok"])
    assert result.ok and result.stdout.endswith(b"ok\n") and b"started" in result.stdout
    assert docker_client.containers.get(leftover.name).id != leftover.id
