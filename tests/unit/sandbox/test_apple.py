"""microclaw.sandbox.apple: command lines (pure) and the backend driven through a fake runner.

Apple Container exists only on macOS, so nothing here runs a real ``container`` CLI: the
argv builders are checked directly, the backend is driven through a recording runner that
plays the CLI's part, and ``test_on_linux_it_is_unavailable_and_nothing_runs`` runs the real
backend on this Linux machine as a stand-in, where it must refuse everything.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from microclaw.errors import PermanentSandboxError, SandboxUnavailable
from microclaw.sandbox import executor
from microclaw.sandbox.apple import (
    EXECUTOR_DIR_SOURCE,
    AppleContainerBackend,
    delete_argv,
    exec_argv,
    list_argv,
    parse_containers,
    run_argv,
    status_argv,
)
from microclaw.sandbox.base import ContainerSpec, ExecRequest, Mount, SandboxConfig
from microclaw.sandbox.service import SandboxService


@pytest.fixture
def config(tmp_path: Path) -> SandboxConfig:
    return SandboxConfig(
        image="microclaw-sandbox:latest",
        memory="512m",
        cpus=2,
        user="1000:1000",
        groups_dir=tmp_path / "groups",
        run_dir=tmp_path / "run",
        instance="prod",
    )


def test_run_argv(config: SandboxConfig) -> None:
    spec = ContainerSpec(
        "alpha",
        False,
        (
            Mount("/Users/me/groups/alpha", "/workspace/group", False),
            Mount("/Users/me/g", "/workspace/global", True),
        ),
    )
    argv = run_argv(
        config, spec, "microclaw-prod-alpha", {"microclaw.group": "alpha", "microclaw.instance": "prod"}
    )
    assert argv[:5] == ["container", "run", "--detach", "--name", "microclaw-prod-alpha"]
    joined = " ".join(argv)
    for expected in (
        "--label microclaw.group=alpha",
        "--label microclaw.instance=prod",
        "--user 1000:1000",
        "--cpus 2",
        "--memory 512M",
        "--cap-drop ALL",
        "--init",
        "--network none",
        "--tmpfs /tmp",
        "--workdir /workspace/group",
        "--mount type=bind,source=/Users/me/groups/alpha,target=/workspace/group ",
        "--mount type=bind,source=/Users/me/g,target=/workspace/global,readonly",
        f"--mount type=bind,source={EXECUTOR_DIR_SOURCE},target=/opt/microclaw,readonly",
    ):
        assert expected in joined + " ", expected
    assert argv[-7:] == [
        "microclaw-sandbox:latest",
        "python3",
        "-I",
        "-S",
        "/opt/microclaw/executor.py",
        "serve",
        "/tmp/.microclaw-exec.sock",
    ]
    assert "docker.sock" not in joined


def test_run_argv_refuses_egress_and_unsafe_paths(config: SandboxConfig) -> None:
    with pytest.raises(PermanentSandboxError):
        run_argv(config, ContainerSpec("alpha", egress_dir=Path("/tmp/e")), "n", {})
    with pytest.raises(PermanentSandboxError):
        run_argv(
            config,
            ContainerSpec("alpha", mounts=(Mount("/a,readonly=false", "/workspace/x", True),)),
            "n",
            {},
        )


def test_small_argvs(config: SandboxConfig) -> None:
    assert exec_argv(config, "n") == [
        "container",
        "exec",
        "--interactive",
        "--user",
        "1000:1000",
        "--workdir",
        "/",
        "n",
        "python3",
        "-I",
        "-S",
        "/opt/microclaw/executor.py",
        "once",
    ]
    assert delete_argv(config, "n") == ["container", "delete", "--force", "n"]
    assert list_argv(config) == ["container", "list", "--all", "--format", "json"]
    assert status_argv(config) == ["container", "system", "status"]


def test_parse_containers_is_defensive() -> None:
    raw = json.dumps(
        [
            {"status": "running", "configuration": {"id": "a", "labels": {"microclaw.instance": "prod"}}},
            {"id": "b", "status": "stopped"},
            "junk",
        ]
    ).encode()
    assert parse_containers(raw) == [
        {"name": "a", "status": "running", "labels": {"microclaw.instance": "prod"}},
        {"name": "b", "status": "stopped", "labels": {}},
    ]


class FakeCli:
    """Plays Apple's ``container`` CLI: records argv, answers like a running system."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.containers: list[dict] = []

    def __call__(self, argv: list[str], stdin: bytes | None, timeout: float) -> subprocess.CompletedProcess:
        self.calls.append(argv)
        verb = argv[1]
        out = b""
        if verb == "list":
            out = json.dumps(self.containers).encode()
        elif verb == "run":
            labels = dict(
                arg.split("=", 1) for arg, prev in zip(argv[1:], argv, strict=False) if prev == "--label"
            )
            self.containers.append({"status": "running", "configuration": {"id": argv[4], "labels": labels}})
        elif verb == "exec":
            req = executor.read_request(executor._stream_reader(__import__("io").BytesIO(stdin)))
            out = executor.encode_response(executor.Response(0, stdout=" ".join(req.argv).encode()))
        elif verb == "delete":
            self.containers = [c for c in self.containers if c["configuration"]["id"] != argv[-1]]
        return subprocess.CompletedProcess(argv, 0, out, b"")


def test_backend_lifecycle_through_the_cli(config: SandboxConfig) -> None:
    cli = FakeCli()
    backend = AppleContainerBackend(config, runner=cli, platform="darwin")
    assert backend.available() is None
    spec = ContainerSpec("alpha")
    handle = backend.ensure(spec)
    assert handle.created and handle.name == "microclaw-prod-alpha"
    assert backend.ensure(spec).created is False  # warm and matching: reused
    result = backend.exec(handle, ExecRequest(("echo", "hi")))
    assert result.stdout == b"echo hi" and result.exit_code == 0
    assert backend.cleanup_orphans() == ["microclaw-prod-alpha"]
    assert [c[1] for c in cli.calls].count("run") == 1


def test_on_linux_it_is_unavailable_and_nothing_runs(config: SandboxConfig) -> None:
    """Stand-in: Apple Container cannot exist on Linux, so the real backend must refuse."""
    backend = AppleContainerBackend(config, platform="linux")
    assert backend.available() == "not macOS: Apple Container runs only on macOS"
    events = []
    service = SandboxService(backend, config, lambda kind, *, group, **data: events.append(kind))
    with pytest.raises(SandboxUnavailable):
        service.exec("alpha", ["touch", "/tmp/should-not-exist"])
    with pytest.raises(SandboxUnavailable):
        backend.ensure(ContainerSpec("alpha"))
    assert events == ["sandbox.unavailable"]
    assert backend.stop("alpha") is False and backend.cleanup_orphans() == []
