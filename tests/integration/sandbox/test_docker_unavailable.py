"""Backend unreachable: every call is a hard SandboxUnavailable and nothing runs on the host.

Needs no Docker engine: the backend is pointed at a socket that does not exist.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from microclaw.errors import SandboxUnavailable
from microclaw.sandbox.base import SandboxConfig
from microclaw.sandbox.docker import DockerBackend
from microclaw.sandbox.service import SandboxService


@pytest.fixture
def dead(tmp_path: Path):
    config = SandboxConfig(
        docker_url=f"unix://{tmp_path}/no-such-docker.sock",
        groups_dir=tmp_path / "groups",
        run_dir=tmp_path / "run",
        api_timeout_s=2,
    )
    events: list[tuple[str, str | None, dict]] = []
    backend = DockerBackend(config)
    service = SandboxService(
        backend, config, lambda kind, *, group, **data: events.append((kind, group, data))
    )
    yield service, backend, events, tmp_path
    service.close()


def test_available_explains_why(dead) -> None:
    _, backend, _, _tmp_path = dead
    reason = backend.available()
    assert reason is not None and "no-such-docker.sock" in reason


def test_every_tool_call_is_a_hard_error_and_nothing_runs_on_the_host(dead) -> None:
    service, _, events, tmp_path = dead
    marker = tmp_path / f"ran-on-host-{uuid.uuid4().hex}"
    calls = (
        lambda: service.exec("alpha", ["touch", str(marker)]),
        lambda: service.exec("alpha", ["sh", "-c", f"echo pwned > {marker}"]),
        lambda: service.write_file("alpha", "x.txt", b"data"),
        lambda: service.read_file("alpha", "x.txt"),
        lambda: service.list_files("alpha"),
        lambda: service.ensure("alpha", is_main=True),
    )
    for call in calls:
        with pytest.raises(SandboxUnavailable) as info:
            call()
        assert info.value.group == "alpha" and "unreachable" in info.value.reason
        assert info.value.transient is False
    assert not marker.exists()
    assert not (tmp_path / "groups" / "alpha" / "x.txt").exists()
    assert {e[0] for e in events} == {"sandbox.unavailable"}
    assert len(events) == len(calls)


def test_maintenance_calls_fail_loudly_too(dead) -> None:
    service, backend, _, _ = dead
    with pytest.raises(SandboxUnavailable):
        service.cleanup_orphans()
    with pytest.raises(SandboxUnavailable):
        backend.stop("alpha")
