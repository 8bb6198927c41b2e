"""workers.sandbox: the sandbox worker's runtime without a container engine (an unreachable
Docker socket, and the Apple backend on Linux), on a real app database."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.thread import TaskPool as ThreadPool

from microclaw.config import load_settings
from microclaw.errors import SandboxUnavailable
from microclaw.runtime.status import collect_status
from microclaw.runtime.wiring import app_engine, bootstrap_database
from workers import sandbox as role


@pytest.fixture
def runtime_for(isolated_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    made: list[role.SandboxRuntime] = []
    run_dir = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))  # short: Unix socket paths

    def build(**env: str) -> role.SandboxRuntime:
        monkeypatch.setenv("MICROCLAW_SANDBOX__RUN_DIR", str(run_dir))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        bootstrap_database(settings)
        made.append(role.SandboxRuntime(settings, app_engine(settings)))
        return made[-1]

    yield build
    for runtime in made:
        runtime.shutdown()
        runtime.engine.dispose()
    shutil.rmtree(run_dir, ignore_errors=True)


def test_unreachable_engine_blocks_every_call_until_orphans_can_be_removed(runtime_for, tmp_path) -> None:
    runtime = runtime_for(MICROCLAW_SANDBOX__DOCKER_URL=f"unix://{tmp_path}/missing.sock")
    with pytest.raises(SandboxUnavailable, match=r"missing\.sock"):
        runtime.service()
    assert "missing.sock" in runtime.refresh()
    status = collect_status(runtime.settings, runtime.engine)["sandbox"]
    assert status["state"] == "unavailable" and "missing.sock" in status["reason"]
    assert status["backend"] == "docker" and status["worker"] == runtime.worker
    runtime.shutdown()
    assert collect_status(runtime.settings, runtime.engine)["sandbox"]["state"] == "stopped"


def test_apple_backend_on_linux_reports_why(runtime_for) -> None:
    runtime = runtime_for(MICROCLAW_SANDBOX__BACKEND="apple")
    assert runtime.service().backend.name == "apple"  # nothing to clean up off macOS
    assert runtime.refresh().startswith("not macOS")
    with pytest.raises(SandboxUnavailable, match="not macOS"):
        runtime.service().exec("alpha", ["true"])


def test_missing_credential_variables_show_in_readiness(runtime_for, monkeypatch) -> None:
    monkeypatch.delenv("MC_NOT_SET", raising=False)
    runtime = runtime_for(
        MICROCLAW_SANDBOX__BACKEND="apple",
        MICROCLAW_SANDBOX__EGRESS_CREDENTIALS='{ "a.example" = { "X-Key" = "env:MC_NOT_SET" } }',
    )
    runtime.refresh()
    assert collect_status(runtime.settings, runtime.engine)["sandbox"]["missing_credentials"] == [
        "MC_NOT_SET"
    ]


def test_a_forking_pool_is_refused(runtime_for) -> None:
    runtime = runtime_for(MICROCLAW_SANDBOX__BACKEND="apple")
    with pytest.raises(SystemExit, match="one process"):
        role.boot_worker(runtime.settings, SimpleNamespace(pool_cls=PreforkPool))


def test_threads_pool_boots_and_shuts_down(runtime_for, monkeypatch) -> None:
    runtime = runtime_for(MICROCLAW_SANDBOX__BACKEND="apple")
    monkeypatch.setattr(role, "_runtime", None)
    trace_log = logging.getLogger("celery.app.trace")
    level = trace_log.level  # boot quiets it; restored below
    role.boot_worker(runtime.settings, SimpleNamespace(pool_cls=ThreadPool))
    try:
        assert role.runtime().settings is runtime.settings
        # The first readiness check runs in the readiness thread (not before the consumer starts).
        deadline = time.monotonic() + 30
        while collect_status(runtime.settings, runtime.engine)["sandbox"]["state"] != "unavailable":
            assert time.monotonic() < deadline, "the first readiness check was never recorded"
            time.sleep(0.05)
    finally:
        role.shutdown_worker()
        role.runtime().engine.dispose()
        trace_log.setLevel(level)
    assert collect_status(runtime.settings, runtime.engine)["sandbox"]["state"] == "stopped"


def test_boot_raises_the_open_files_limit_to_the_hard_limit(runtime_for, monkeypatch) -> None:
    """Idle egress tunnels once exhausted a soft limit of 1024 (systemd's default)."""
    runtime = runtime_for(MICROCLAW_SANDBOX__BACKEND="apple")
    monkeypatch.setattr(role, "_runtime", None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(soft, 512)
    if hard != resource.RLIM_INFINITY and hard <= low:
        pytest.skip("the hard open-files limit is already this low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    level = logging.getLogger("celery.app.trace").level
    try:
        role.boot_worker(runtime.settings, SimpleNamespace(pool_cls=ThreadPool))
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        role.shutdown_worker()
        role.runtime().engine.dispose()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        logging.getLogger("celery.app.trace").setLevel(level)


def test_an_egress_budget_larger_than_the_open_files_limit_is_named(runtime_for) -> None:
    runtime = runtime_for(MICROCLAW_SANDBOX__EGRESS_MAX_CONNECTIONS="100000000")
    problem = role.check_open_files_budget(runtime.settings)
    assert problem is not None and "sandbox.egress_max_connections=100000000" in problem


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_run_dir_planted_by_another_user_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    planted.mkdir()
    os.chown(planted, 12345, 12345)
    assert "not a directory owned by" in role.unsafe_run_dir(planted)
    assert role.unsafe_run_dir(tmp_path / "fresh" / "run") is None
    assert (tmp_path / "fresh" / "run").stat().st_mode & 0o777 == 0o700


def test_an_unchanged_unavailable_sandbox_warns_once_not_at_every_check(
    runtime_for, tmp_path, caplog
) -> None:
    runtime = runtime_for(MICROCLAW_SANDBOX__DOCKER_URL=f"unix://{tmp_path}/missing.sock")
    with caplog.at_level("INFO", logger="workers.sandbox"):
        for _ in range(3):
            runtime.refresh()
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "sandbox unavailable" in r.message]
    assert len(warnings) == 1
    runtime.shutdown()
