"""microclaw.sandbox.docker: the pure parts (create arguments, guards); the engine parts are in
tests/integration/sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from microclaw.errors import PermanentSandboxError
from microclaw.sandbox.base import ContainerSpec, Mount, SandboxConfig
from microclaw.sandbox.docker import (
    EXECUTOR_SOURCE,
    DockerBackend,
    create_kwargs,
    engine_socket_path,
    exec_dir_for,
    executor_command,
    proxy_env,
)


@pytest.fixture
def config(tmp_path: Path) -> SandboxConfig:
    return SandboxConfig(run_dir=tmp_path / "run", memory="256m", cpus=1.5, pids_limit=99, user="1000:1000")


def test_every_container_is_hardened(config: SandboxConfig, tmp_path: Path) -> None:
    spec = ContainerSpec("alpha", False, (Mount("/h/alpha", "/workspace/group", False),))
    kw = create_kwargs(config, spec, "mc-x-alpha", {"l": "1"}, tmp_path / "x")
    assert kw["user"] == "1000:1000"
    assert kw["cap_drop"] == ["ALL"]
    assert kw["security_opt"] == ["no-new-privileges:true"]
    assert kw["read_only"] is True
    assert kw["privileged"] is False
    assert kw["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=64m,mode=1777"}
    assert kw["mem_limit"] == kw["memswap_limit"] == 256 * 1024**2
    assert kw["nano_cpus"] == 1_500_000_000
    assert kw["pids_limit"] == 99
    assert [(u["Name"], u["Soft"], u["Hard"]) for u in kw["ulimits"]] == [("fsize", 1024**3, 1024**3)]
    assert kw["network_mode"] == "none"
    assert kw["init"] is True
    assert "HTTP_PROXY" not in kw["environment"]
    targets = {m["Target"]: m for m in kw["mounts"]}
    assert targets["/workspace/group"]["ReadOnly"] is False
    assert targets["/opt/microclaw/executor.py"]["Source"] == str(EXECUTOR_SOURCE)
    assert targets["/opt/microclaw/executor.py"]["ReadOnly"] is True
    assert "/run/microclaw/egress" not in targets
    assert not any("docker.sock" in m["Source"] for m in kw["mounts"])


def test_egress_adds_only_the_proxy_socket_dir_and_env(config: SandboxConfig, tmp_path: Path) -> None:
    spec = ContainerSpec("alpha", False, (), egress_dir=tmp_path / "e")
    kw = create_kwargs(config, spec, "n", {}, tmp_path / "x")
    assert kw["network_mode"] == "none"  # still no interface: the relay is the way out
    targets = {m["Target"]: m for m in kw["mounts"]}
    assert targets["/run/microclaw/egress"]["ReadOnly"] is True
    assert kw["environment"]["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    assert kw["command"][-2:] == ["127.0.0.1:3128", "/run/microclaw/egress/proxy.sock"]
    assert executor_command(ContainerSpec("a"), config)[-1] == "/run/microclaw/exec/exec.sock"
    assert proxy_env(9)["no_proxy"] == "localhost,127.0.0.1"


@pytest.mark.parametrize("source", ["/var/run", "/var/run/docker.sock", "/run", "/"])
def test_engine_socket_can_never_be_mounted(config: SandboxConfig, source: str) -> None:
    backend = DockerBackend(config)
    spec = ContainerSpec("alpha", True, (Mount(source, "/workspace/extra/x", True),))
    with pytest.raises(PermanentSandboxError):
        backend.ensure(spec)


def test_exec_dir_is_short_and_stable(config: SandboxConfig) -> None:
    a = exec_dir_for(config, "microclaw-default-" + "g" * 64)
    assert a == exec_dir_for(config, "microclaw-default-" + "g" * 64)
    assert len(str(a / "exec.sock")) < 108


def test_engine_socket_path() -> None:
    assert engine_socket_path("unix:///var/run/docker.sock") == "/var/run/docker.sock"
    assert engine_socket_path("tcp://1.2.3.4:2375") is None


def test_remote_engine_uses_docker_exec() -> None:
    assert DockerBackend(SandboxConfig(docker_url="tcp://127.0.0.1:2375"))._use_socket is False
    assert DockerBackend(SandboxConfig(exec_transport="docker"))._use_socket is False
