"""The sandbox tasks end to end: a real sandbox worker process (the Procfile's command line),
``SandboxClient`` calls through the SQLite broker, the real Docker engine, audit rows and the
readiness row in the app database, SIGKILL recovery, and a worker whose engine is unreachable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from microclaw.errors import PolicyDenied, SandboxUnavailable, TransientSandboxError
from microclaw.runtime import queues
from microclaw.runtime.status import collect_status, health_problems
from microclaw.sandbox.client import SandboxClient
from microclaw.sandbox.mounts import MountRequest
from microclaw.store import audit
from microclaw.store.db import read_tx
from microclaw.store.models import ComponentStatus, WorkerHeartbeat
from tests.integration.sandbox.conftest import IMAGE, RUN_ID
from tests.integration.stack import BIN, Stack, wait_for

ROOT = Path(__file__).resolve().parents[3]
_counter = iter(range(1_000_000))


def procfile_argv(role: str) -> list[str]:
    """The scale-out Procfile's command line for ``role``, with this venv's executables (the
    default Procfile's one worker serves the sandbox queue among all the others)."""
    for line in (ROOT / "Procfile.scale").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == role:
            argv = shlex.split(command)
            return [str(BIN / argv[0]), *argv[1:]]
    raise AssertionError(f"no {role!r} line in the Procfile")


def consuming(stack: Stack, pid: int) -> bool:
    """The worker wrote its heartbeat, which it does once its consumer runs."""
    t = WorkerHeartbeat.__table__
    with read_tx(stack.engine) as conn:
        return conn.execute(select(t.c.pid).where(t.c.pid == pid)).first() is not None


def start_sandbox_worker(stack: Stack, name: str, state: str | None) -> subprocess.Popen[bytes]:
    """Start the sandbox worker exactly as the scale-out Procfile does; wait until it consumes and has
    reported readiness (``state`` when given)."""
    proc = stack._spawn(name, procfile_argv("sandbox"))

    def up() -> bool:
        row = readiness(stack)
        reported = row is not None and row["pid"] == proc.pid and (state is None or row["state"] == state)
        return reported and consuming(stack, proc.pid)

    wait_for(up, 90, f"the sandbox worker (pid {proc.pid}) to consume and report {state or 'readiness'}")
    return proc


def readiness(stack: Stack) -> dict[str, Any] | None:
    t = ComponentStatus.__table__
    with read_tx(stack.engine) as conn:
        row = conn.execute(select(t).where(t.c.name == "sandbox")).first()
    if row is None:
        return None
    return {"state": row.state, **json.loads(row.detail or "{}")}


def audit_rows(stack: Stack, kind: str | None = None) -> list[dict[str, Any]]:
    with read_tx(stack.engine) as conn:
        return audit.recent(conn, kind=kind, limit=1000)


@dataclasses.dataclass
class SandboxStack:
    stack: Stack
    instance: str
    run_dir: Path

    def start_worker(self, name: str = "sandbox", state: str = "ready") -> subprocess.Popen[bytes]:
        return start_sandbox_worker(self.stack, name, state)

    def client(self, **overrides: Any) -> SandboxClient:
        settings = self.stack.settings.sandbox.model_copy(update=overrides)
        return SandboxClient(self.stack.app, settings)

    @property
    def groups_dir(self) -> Path:
        return self.stack.settings.groups_dir

    def containers(self, docker_client) -> list:
        return docker_client.containers.list(
            all=True, filters={"label": f"microclaw.instance={self.instance}"}
        )


@pytest.fixture
def sandbox_stack(make_stack, sandbox_image, docker_client) -> Iterator[Callable[..., SandboxStack]]:
    made: list[SandboxStack] = []

    def build(**overrides: str) -> SandboxStack:
        instance = f"t{RUN_ID}-c{next(_counter)}"
        run_dir = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))  # short: Unix socket paths
        env = {
            "MICROCLAW_SANDBOX__IMAGE": sandbox_image,
            "MICROCLAW_SANDBOX__INSTANCE": instance,
            "MICROCLAW_SANDBOX__RUN_DIR": str(run_dir),
            "MICROCLAW_SANDBOX__MEMORY": "128m",
            "MICROCLAW_SANDBOX__PIDS_LIMIT": "64",
            "MICROCLAW_SANDBOX__READINESS_INTERVAL_S": "1",
            "MICROCLAW_SANDBOX__EXEC_TIMEOUT_S": "30",
            "MICROCLAW_SANDBOX__QUEUE_TIMEOUT_S": "30",
            **overrides,
        }
        made.append(SandboxStack(make_stack(**env), instance, run_dir))
        return made[-1]

    yield build
    for sb in made:
        sb.stack.stop()  # workers first: nothing starts a container after this
        for container in sb.containers(docker_client):
            container.remove(force=True)
        shutil.rmtree(sb.run_dir, ignore_errors=True)


@pytest.mark.docker
def test_exec_and_file_tools_round_trip_through_the_sandbox_worker(sandbox_stack, docker_client) -> None:
    sb = sandbox_stack(MICROCLAW_SANDBOX__IDLE_TIMEOUT_S="1")
    sb.start_worker()
    client = sb.client()

    result = client.exec(
        "alpha",
        ["sh", "-c", 'read line; echo "$line/$GREETING/$(id -u)/$(pwd)"; echo oops >&2; exit 3'],
        stdin=b"from stdin\n",
        env={"GREETING": "hi"},
        tool="shell",
    )
    assert result.exit_code == 3 and not result.timed_out and not result.truncated
    assert result.stdout == b"from stdin/hi/1000//workspace/group\n"
    assert result.stderr == b"oops\n"

    payload = bytes(range(256)) * 4  # binary survives the JSON wire format
    assert client.write_file("alpha", "notes/data.bin", payload) == len(payload)
    assert (sb.groups_dir / "alpha" / "notes" / "data.bin").read_bytes() == payload  # the group's folder
    content = client.read_file("alpha", "notes/data.bin")
    assert content.data == payload and content.size == len(payload) and not content.truncated
    assert [(e.name, e.kind, e.size) for e in client.list_files("alpha", "notes")] == [
        ("data.bin", "file", len(payload))
    ]
    with pytest.raises(PolicyDenied) as denied:
        client.read_file("alpha", "../../etc/passwd")
    assert denied.value.group == "alpha"

    execs = audit_rows(sb.stack, "sandbox.exec")
    shell = next(r for r in execs if r["detail"]["tool"] == "shell")
    assert shell["decision"] == "allow"
    assert shell["detail"]["group"] == "alpha" and shell["detail"]["exit_code"] == 3
    assert shell["detail"]["stdout_bytes"] == len(result.stdout) and "duration_ms" in shell["detail"]
    assert {r["detail"]["tool"] for r in execs} >= {"shell", "write_file", "read_file", "list_files"}
    refused = audit_rows(sb.stack, "sandbox.denied")
    assert refused and refused[0]["decision"] == "deny" and refused[0]["detail"]["group"] == "alpha"

    # Idle containers are stopped by the periodic task (here sent by hand instead of beat).
    (container,) = sb.containers(docker_client)

    def idle_stopped() -> bool:
        sb.stack.app.send_task(queues.SANDBOX_STOP_IDLE, queue=queues.SANDBOX)
        return not sb.containers(docker_client)

    wait_for(idle_stopped, 30, "the idle container to be stopped", interval=0.5)
    assert audit_rows(sb.stack, "sandbox.stop")[0]["detail"] == {"group": "alpha", "reason": "idle"}
    assert client.exec("alpha", ["cat", "notes/data.bin"]).stdout == payload  # started again on demand
    assert sb.containers(docker_client)[0].id != container.id


@pytest.mark.docker
def test_mount_refusals_and_egress_credentials_are_audited_without_the_secret(
    sandbox_stack, upstream, tmp_path: Path
) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    api = upstream("127.0.0.1")
    shared = tmp_path / "shared"
    (shared / ".ssh").mkdir(parents=True)
    allowlist = tmp_path / "policy" / "mount-allowlist.json"
    allowlist.parent.mkdir()
    allowlist.write_text(
        json.dumps(
            {
                "allowedRoots": [{"path": str(shared), "allowReadWrite": False}],
                "blockedPatterns": [],
                "nonMainReadOnly": True,
            }
        )
    )
    sb = sandbox_stack(
        MICROCLAW_MOUNT_ALLOWLIST_PATH=str(allowlist),
        MICROCLAW_SANDBOX__NETWORK_ALLOWLISTS=f'{{ alpha = ["127.0.0.1:{api.port}"] }}',
        MICROCLAW_SANDBOX__EGRESS_CREDENTIALS='{ "127.0.0.1" = { "X-Api-Key" = "env:MC_TEST_API_KEY" } }',
        MC_TEST_API_KEY=secret,
    )
    sb.start_worker()
    client = sb.client()

    handle = client.ensure(
        "alpha",
        extra_mounts=[MountRequest(str(shared / ".ssh")), MountRequest(str(tmp_path / "elsewhere"))],
    )
    assert handle["created"] is True and handle["group"] == "alpha"
    mounts = audit_rows(sb.stack, "sandbox.mount")
    assert len(mounts) == 2 and {m["decision"] for m in mounts} == {"deny"}
    assert all(m["detail"]["group"] == "alpha" and m["detail"]["allowed"] is False for m in mounts)

    fetched = client.exec("alpha", ["wget", "-q", "-O", "-", f"http://127.0.0.1:{api.port}/v1/things"])
    assert fetched.stdout == b"upstream says hi to /v1/things\n", fetched
    assert api.requests[-1]["headers"].get("X-Api-Key") == secret  # injected by the proxy
    inside = client.exec("alpha", ["sh", "-c", "env; cat /proc/self/environ; echo $MC_TEST_API_KEY"])
    assert secret.encode() not in inside.stdout + inside.stderr
    client.exec("alpha", ["echo", f"leaked {secret}"])  # even if a secret reached an argv...

    rows = audit_rows(sb.stack)
    allowed = [r for r in rows if r["kind"] == "egress.allow"]
    assert allowed and allowed[0]["decision"] == "allow" and allowed[0]["detail"]["group"] == "alpha"
    assert secret not in json.dumps(rows, default=str)  # ...no audit row carries it
    assert any("leaked <redacted>" in r["detail"].get("argv", "") for r in rows)


@pytest.mark.docker
def test_sigkill_mid_exec_leaves_no_orphan_and_the_next_call_works(sandbox_stack, docker_client) -> None:
    sb = sandbox_stack()
    first = sb.start_worker()
    client = sb.client(queue_timeout_s=4)
    started = sb.groups_dir / "alpha" / "started"
    outcome: dict[str, BaseException] = {}

    def long_exec() -> None:
        try:
            client.exec("alpha", ["sh", "-c", "touch /workspace/group/started; sleep 60"], timeout=6)
        except BaseException as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=long_exec, daemon=True)
    caller.start()
    wait_for(started.exists, 60, "the long exec to start")
    (orphan,) = sb.containers(docker_client)
    sb.stack.kill("sandbox")  # SIGKILL of the worker's process group, mid-exec
    assert first.poll() is not None
    orphan.reload()
    assert orphan.status == "running"  # what the dead worker left behind

    second = sb.start_worker("sandbox2")
    assert readiness(sb.stack)["orphans_removed"] == 1
    assert [c.id for c in sb.containers(docker_client)] == []  # removed before serving anything
    audited = [r["detail"]["container"] for r in audit_rows(sb.stack, "sandbox.orphan")]
    assert audited == [orphan.name]

    result = client.exec("alpha", ["sh", "-c", "ls /workspace/group; echo ok"])
    assert result.ok and result.stdout == b"started\nok\n"
    (fresh,) = sb.containers(docker_client)
    assert fresh.id != orphan.id and fresh.status == "running"
    assert second.poll() is None

    caller.join(timeout=30)
    assert isinstance(outcome.get("error"), TransientSandboxError)  # no answer, never a fake one
    assert "did not answer" in str(outcome["error"])


def test_unreachable_engine_is_a_hard_error_and_shows_in_status(make_stack, tmp_path: Path) -> None:
    """Needs no Docker engine: the worker is pointed at a socket that does not exist."""
    stack = make_stack(
        DOCKER_HOST="unix:///nonexistent.sock",
        MICROCLAW_SANDBOX__IMAGE=IMAGE,
        MICROCLAW_SANDBOX__INSTANCE=f"t{RUN_ID}-u{next(_counter)}",
        MICROCLAW_SANDBOX__RUN_DIR=tempfile.mkdtemp(prefix="mc-", dir="/tmp"),
        MICROCLAW_SANDBOX__READINESS_INTERVAL_S="1",
        MICROCLAW_SANDBOX__QUEUE_TIMEOUT_S="30",
    )
    proc = start_sandbox_worker(stack, "sandbox", None)
    row = readiness(stack)
    assert row["state"] == "unavailable" and "nonexistent.sock" in row["reason"]

    client = SandboxClient(stack.app, stack.settings.sandbox)
    marker = tmp_path / f"ran-on-host-{uuid.uuid4().hex}"
    for call in (
        lambda: client.exec("alpha", ["touch", str(marker)]),
        lambda: client.write_file("alpha", "x.txt", b"data"),
        lambda: client.ensure("alpha", is_main=True),
    ):
        with pytest.raises(SandboxUnavailable) as info:
            call()
        assert "nonexistent.sock" in info.value.reason and info.value.transient is False
    assert not marker.exists()
    assert not (stack.settings.groups_dir / "alpha" / "x.txt").exists()

    snapshot = collect_status(stack.settings, stack.engine)
    assert snapshot["sandbox"]["state"] == "unavailable" and snapshot["sandbox"]["ready"] is False
    assert "nonexistent.sock" in snapshot["sandbox"]["reason"]
    assert not any("sandbox" in problem for problem in health_problems(snapshot))
    shown = subprocess.run(
        [str(BIN / "microclaw-host"), "status"],
        env={**stack.env, "COLUMNS": "300"},
        cwd=stack.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if line.startswith("sandbox:"))
    assert "unavailable" in line and "nonexistent.sock" in line
    assert proc.poll() is None  # the worker stays up and keeps answering
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    stack.procs.pop("sandbox")
    assert readiness(stack)["state"] == "stopped"
