"""The command lines a user runs, as subprocesses on fresh data directories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import base_env
from tests.integration.stack import procfile_stack, wait_for

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def run(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_smoke_on_a_fresh_data_directory(tmp_path: Path) -> None:
    result = run([str(BIN / "microclaw-host"), "smoke"], base_env(tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr
    sent = (
        next(line for line in result.stdout.splitlines() if line.startswith("sent:")).split(":", 1)[1].strip()
    )
    assert f"delivered: echo: {sent}" in result.stdout
    assert (tmp_path / "data" / "microclaw.db").exists()


def test_migrate_and_status_without_a_running_host(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    migrated = run([str(BIN / "microclaw-host"), "migrate"], env, tmp_path)
    assert migrated.returncode == 0 and "at revision" in migrated.stdout
    status = run([str(BIN / "microclaw-host"), "status", "--json"], env, tmp_path)
    assert status.returncode == 0, status.stderr
    assert '"reachable": false' in status.stdout
    health = run([str(BIN / "microclaw-host"), "health"], env, tmp_path)
    assert health.returncode == 1 and "host not reachable" in health.stderr


def test_invalid_setting_stops_with_the_key_named(tmp_path: Path) -> None:
    env = base_env(tmp_path, MICROCLAW_ROUTER__CONCURRENCY="0")
    result = run([str(BIN / "microclaw-host"), "status"], env, tmp_path)
    assert result.returncode == 2
    assert "router.concurrency" in result.stderr


@pytest.mark.slow
def test_full_procfile_stack_answers_a_local_chat_message(tmp_path: Path) -> None:
    """`honcho start` on the repository's Procfile, then `microclaw chat -m` as a user would."""
    env = base_env(tmp_path, MICROCLAW_AGENT__PROVIDER="scripted", MICROCLAW_BROKER__POLLING_INTERVAL="0.02")
    with procfile_stack(tmp_path, env):
        chat = run(
            [str(BIN / "microclaw"), "chat", "-m", "hello from the terminal", "--timeout", "60"],
            env,
            tmp_path,
        )
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.strip() == "echo: hello from the terminal"
        health = run([str(BIN / "microclaw-host"), "health"], env, tmp_path)
        assert health.returncode == 0, health.stderr


def test_run_daemonizes_with_a_pidfile_and_stop_ends_it(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    started = run([str(BIN / "microclaw-host"), "run"], env, tmp_path)
    assert started.returncode == 0, started.stderr
    assert "daemonizing" in started.stderr and "connector local" in started.stderr  # the boot report
    pidfile = tmp_path / "data" / "microclaw-host.pid"
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, "the pidfile"))
    base = f"http://127.0.0.1:{env['MICROCLAW_HTTP__PORT']}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/status", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 20, "the daemon's HTTP surface")
        again = run([str(BIN / "microclaw-host"), "run"], env, tmp_path)
        assert again.returncode == 1 and f"already running (pid {pid})" in again.stderr
    finally:
        stopped = run([str(BIN / "microclaw-host"), "stop"], env, tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert not pidfile.exists()
    # Gone, or a zombie waiting for this container's init to reap it: either way not running.
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
