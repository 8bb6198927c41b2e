"""microclaw.sandbox.service through a tiny recording backend (no Docker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from microclaw.errors import PolicyDenied, SandboxUnavailable
from microclaw.sandbox.base import (
    BaseSandboxBackend,
    ContainerGone,
    ContainerHandle,
    ContainerSpec,
    ExecRequest,
    ExecResult,
    SandboxConfig,
)
from microclaw.sandbox.mounts import MountRequest
from microclaw.sandbox.service import SandboxService, resolve_workspace_path


class RecordingBackend(BaseSandboxBackend):
    name = "recording"

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self.unavailable: str | None = None
        self.specs: list[ContainerSpec] = []
        self.requests: list[ExecRequest] = []
        self.stopped: list[str] = []
        self.gone_once = False
        self.result = ExecResult(0, b"ok", b"", False, 1, False, 2, 0)

    def available(self):
        return self.unavailable

    def ensure(self, spec):
        self.specs.append(spec)
        return ContainerHandle(spec.group, self.container_name(spec.group), f"id{len(self.specs)}", True)

    def exec(self, handle, request):
        if self.gone_once:
            self.gone_once = False
            raise ContainerGone("gone", group=handle.group)
        self.requests.append(request)
        return self.result

    def stop(self, group):
        self.stopped.append(group)
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(tmp_path: Path):
    config = SandboxConfig(
        groups_dir=tmp_path / "groups",
        run_dir=tmp_path / "run",
        mount_allowlist_path=tmp_path / "allow.json",
        exec_timeout_s=30,
        max_exec_timeout_s=60,
    )
    backend = RecordingBackend(config)
    events: list[tuple[str, str | None, dict]] = []
    clock = Clock()
    service = SandboxService(
        backend, config, lambda kind, *, group, **data: events.append((kind, group, data)), clock=clock
    )
    yield service, backend, events, clock, tmp_path
    service.close()


def kinds(events) -> list[str]:
    return [e[0] for e in events]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("notes.txt", "/workspace/group/notes.txt"),
        ("./a/./b", "/workspace/group/a/b"),
        ("/workspace/global/x", "/workspace/global/x"),
        ("/workspace", "/workspace"),
        ("//workspace//group/", "/workspace/group"),
    ],
)
def test_workspace_paths(path: str, expected: str) -> None:
    assert resolve_workspace_path(path) == expected


@pytest.mark.parametrize(
    "path",
    ["", "../x", "a/../../etc/passwd", "/etc/passwd", "/workspace/../etc", "/workspacex/a", "a\x00b", "/"],
)
def test_path_tricks_are_refused(path: str) -> None:
    with pytest.raises(PolicyDenied):
        resolve_workspace_path(path)


def test_unavailable_backend_is_a_hard_error_and_nothing_runs(env) -> None:
    service, backend, events, _, _ = env
    backend.unavailable = "docker engine unreachable at unix:///nope"
    with pytest.raises(SandboxUnavailable) as info:
        service.exec("alpha", ["echo", "hi"])
    assert info.value.reason == "docker engine unreachable at unix:///nope"
    assert backend.requests == [] and backend.specs == []
    assert events[0][:2] == ("sandbox.unavailable", "alpha")
    assert service.readiness() == "docker engine unreachable at unix:///nope"


def test_exec_warms_once_and_audits(env) -> None:
    service, backend, events, _, _ = env
    service.exec("alpha", ["echo", "hi"], env={"A": "1"}, tool="bash")
    service.exec("alpha", ["true"], stdin=b"x", workdir="sub", timeout=9999)
    assert len(backend.specs) == 1
    first, second = backend.requests
    assert first.workdir == "/workspace/group" and first.env == {"A": "1"}
    assert first.timeout_s == 30 and first.max_output == service.config.max_output_bytes
    assert second.workdir == "/workspace/group/sub" and second.stdin == b"x"
    assert second.timeout_s == 60  # clamped to max_exec_timeout_s
    execs = [e for e in events if e[0] == "sandbox.exec"]
    assert (
        execs[0][2]["tool"] == "bash" and execs[0][2]["exit_code"] == 0 and execs[0][2]["argv"] == "echo hi"
    )
    assert "sandbox.start" in kinds(events)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"argv": []},
        {"argv": "echo hi"},
        {"argv": ["a\x00b"]},
        {"argv": ["x"], "env": {"BAD-KEY": "1"}},
        {"argv": ["x"], "env": {"K": "v\x00"}},
        {"argv": ["x"], "workdir": "../../etc"},
    ],
)
def test_bad_exec_arguments_are_denied_and_audited(env, kwargs) -> None:
    service, backend, events, _, _ = env
    argv = kwargs.pop("argv")
    with pytest.raises(PolicyDenied):
        service.exec("alpha", argv, **kwargs)
    assert backend.requests == []
    assert events[-1][0] == "sandbox.denied"


def test_file_ops_reject_path_tricks_before_touching_the_container(env) -> None:
    service, backend, events, _, _ = env
    for call in (
        lambda: service.read_file("alpha", "../../etc/shadow"),
        lambda: service.write_file("alpha", "/etc/passwd", b"x"),
        lambda: service.list_files("alpha", "/"),
    ):
        with pytest.raises(PolicyDenied):
            call()
    assert backend.requests == []
    assert kinds(events) == ["sandbox.denied"] * 3


def test_write_file_size_limit(env) -> None:
    service, backend, _, _, _ = env
    with pytest.raises(PolicyDenied):
        service.write_file("alpha", "big.bin", b"x" * (service.config.max_file_bytes + 1))
    assert backend.requests == []


def test_list_files_parses_stat_lines(env) -> None:
    service, backend, _, _, _ = env
    listing = (
        b"regular file|5|1700000000|/workspace/group/a|b.txt\n"
        b"directory|4096|1700000001|/workspace/group/sub\n"
    )
    backend.result = ExecResult(0, listing, b"", False, 1, False, len(listing), 0)
    entries = service.list_files("alpha")
    assert [(e.name, e.kind, e.size) for e in entries] == [("a|b.txt", "file", 5), ("sub", "dir", 4096)]


def test_container_gone_is_reensured_with_the_same_spec(env) -> None:
    service, backend, _events, _, _ = env
    service.ensure("alpha", is_main=True)
    backend.gone_once = True
    result = service.exec("alpha", ["true"])
    assert result.ok
    assert len(backend.specs) == 2
    assert backend.specs[1].is_main is True


def test_idle_containers_are_stopped_on_the_injected_clock(env) -> None:
    service, backend, events, clock, _ = env
    service.ensure("alpha")
    service.ensure("beta")
    clock.now += 1000
    service.exec("beta", ["true"])
    clock.now += 900  # alpha idle for 1900 s, beta for 900 s
    assert service.stop_idle() == ["alpha"]
    assert backend.stopped == ["alpha"]
    assert ("sandbox.stop", "alpha") in [(e[0], e[1]) for e in events]
    assert service.stop_idle(clock.now + 1800) == ["beta"]


def test_mount_decisions_are_audited(env) -> None:
    service, backend, events, _, tmp_path = env
    (tmp_path / "projects" / "app").mkdir(parents=True)
    (tmp_path / "projects" / ".ssh").mkdir()
    (tmp_path / "allow.json").write_text(
        json.dumps(
            {
                "allowedRoots": [{"path": str(tmp_path / "projects"), "allowReadWrite": True}],
                "blockedPatterns": [],
                "nonMainReadOnly": True,
            }
        )
    )
    service.ensure(
        "alpha",
        extra_mounts=[
            MountRequest(str(tmp_path / "projects" / "app"), "app", readonly=False),
            MountRequest(str(tmp_path / "projects" / ".ssh"), "keys"),
        ],
    )
    mounts = [e[2] for e in events if e[0] == "sandbox.mount"]
    assert [(m["allowed"], m["readonly"], m["container_path"]) for m in mounts] == [
        (True, True, "/workspace/extra/app"),
        (False, True, "/workspace/extra/keys"),
    ]
    assert [m.container_path for m in backend.specs[0].mounts] == ["/workspace/group", "/workspace/extra/app"]
    assert (tmp_path / "groups" / "alpha").is_dir()


def test_invalid_group_never_reaches_the_backend(env) -> None:
    service, backend, _, _, _ = env
    with pytest.raises(ValueError):
        service.ensure("../../etc")
    with pytest.raises(ValueError):
        service.exec("global", ["true"])
    assert backend.specs == []


def test_a_group_folder_that_is_a_link_is_never_mounted(env) -> None:
    service, backend, events, _, tmp_path = env
    (tmp_path / "groups" / "beta").mkdir(parents=True)
    (tmp_path / "groups" / "alpha").symlink_to(tmp_path / "groups" / "beta")  # another group's files
    with pytest.raises(PolicyDenied) as info:
        service.exec("alpha", ["true"])
    assert "alpha is a symbolic link" in info.value.reason
    assert backend.specs == [] and backend.requests == []
    assert ("sandbox.denied", "alpha") in [e[:2] for e in events]
