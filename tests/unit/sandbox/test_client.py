"""microclaw.sandbox.client: the JSON wire format, error mapping and the caller's wait, against a
real SQLite result store and a stand-in for the worker (no broker, no Docker)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from microclaw.config import SandboxSettings
from microclaw.errors import (
    PermanentSandboxError,
    PolicyDenied,
    SandboxUnavailable,
    TransientSandboxError,
)
from microclaw.runtime import queues
from microclaw.sandbox.base import ExecResult
from microclaw.sandbox.client import (
    SandboxClient,
    decode_exec_result,
    decode_mounts,
    encode_exec_result,
    encode_mounts,
    error_result,
    ok,
    raise_error,
)
from microclaw.sandbox.mounts import MountRequest


def test_exec_results_round_trip_with_binary_output() -> None:
    result = ExecResult(2, bytes(range(256)), b"\xff\xfe err", True, 12, False, 5000, 7)
    assert decode_exec_result(encode_exec_result(result)) == result


def test_mount_requests_round_trip_and_bad_ones_are_refused() -> None:
    mounts = (MountRequest("/srv/data"), MountRequest("/srv/rw", "rw", False))
    assert decode_mounts(encode_mounts(mounts)) == mounts
    with pytest.raises(ValueError):
        decode_mounts([{"container_path": "x"}])


@pytest.mark.parametrize(
    ("exc", "raised"),
    [
        (SandboxUnavailable("docker engine unreachable", group="alpha"), SandboxUnavailable),
        (PolicyDenied("sandbox.path", "'..' is not allowed", group="alpha"), PolicyDenied),
        (TransientSandboxError("exec did not answer in time", group="alpha"), TransientSandboxError),
        (PermanentSandboxError("docker refused", group="alpha"), PermanentSandboxError),
        (ValueError("invalid group name '../x'"), PermanentSandboxError),
    ],
)
def test_errors_survive_the_wire_as_the_same_class_of_failure(exc: Exception, raised: type) -> None:
    answer = error_result(exc)
    assert answer["ok"] is False
    with pytest.raises(raised) as info:
        raise_error(answer["error"])
    assert info.value.transient == getattr(exc, "transient", False)
    if isinstance(exc, SandboxUnavailable):
        assert info.value.reason == exc.reason and info.value.group == "alpha"
    if isinstance(exc, PolicyDenied):
        assert (info.value.action, info.value.reason) == (exc.action, exc.reason)


class Worker:
    """Stands in for the sandbox worker: answers each sent task straight into the result store."""

    def __init__(self, client: SandboxClient, answer: Any, state: str = "SUCCESS") -> None:
        self.client, self.answer, self.state = client, answer, state
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append({"name": name, **options})
        self.client.backend.store_result(options["task_id"], self.answer, self.state)


@pytest.fixture
def client(tmp_path: Path) -> SandboxClient:
    settings = SandboxSettings(result_url=f"db+sqlite:///{tmp_path / 'results.db'}", queue_timeout_s=5)
    return SandboxClient(Celery("test", set_as_current=False), settings)


def test_client_sends_json_and_decodes_the_answer(client: SandboxClient) -> None:
    result = ExecResult(0, b"hi\n", b"", False, 3, False, 3, 0)
    worker = Worker(client, ok(encode_exec_result(result)))
    client.app = worker  # type: ignore[assignment]
    assert client.exec("alpha", ["echo", "hi"], stdin=b"\x00", timeout=7, is_main=True) == result
    (sent,) = worker.sent
    assert sent["name"] == queues.SANDBOX_EXEC and sent["queue"] == queues.SANDBOX
    assert sent["ignore_result"] is False and sent["expires"] == 7 + 5
    assert sent["kwargs"] == {
        "group": "alpha",
        "argv": ["echo", "hi"],
        "stdin": "AA==",
        "env": {},
        "workdir": None,
        "timeout": 7,
        "tool": None,
        "is_main": True,
        "extra_mounts": [],
    }
    meta = client.backend.get_task_meta(sent["task_id"], cache=False)
    assert meta["status"] == "PENDING"  # the answer was deleted once read


def test_client_raises_the_structured_error(client: SandboxClient) -> None:
    client.app = Worker(client, error_result(SandboxUnavailable("no engine", group="alpha")))  # type: ignore[assignment]
    with pytest.raises(SandboxUnavailable, match="no engine"):
        client.list_files("alpha")


def test_a_crashed_task_is_a_permanent_error(client: SandboxClient) -> None:
    client.app = Worker(client, RuntimeError("bug"), state="FAILURE")  # type: ignore[assignment]
    with pytest.raises(PermanentSandboxError, match="failed in the sandbox worker"):
        client.stop("alpha")


def test_settings_default_to_the_apps(tmp_path: Path) -> None:
    app = Celery("test", set_as_current=False)
    settings = SandboxSettings(result_url=f"db+sqlite:///{tmp_path / 'results.db'}")
    app.conf.microclaw_settings = dataclasses.make_dataclass("S", [("sandbox", SandboxSettings)])(settings)
    assert SandboxClient(app).settings is settings
