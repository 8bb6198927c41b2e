"""The command lines a user runs, as subprocesses on fresh data directories."""

from __future__ import annotations

import http.server
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import base_env
from tests.integration.conftest import make_stack  # noqa: F401 - the fixture
from tests.integration.stack import host_headers, procfile_stack, wait_for

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def run(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a command line as a user with the common umask 022 would."""
    return subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        umask=0o022,
    )


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
            headers = host_headers(tmp_path / "data")
            return httpx.get(f"{base}/status", headers=headers, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 20, "the daemon's HTTP surface")
        again = run([str(BIN / "microclaw-host"), "run"], env, tmp_path)
        assert again.returncode == 1 and f"already running (pid {pid})" in again.stderr
        # The daemon's own files are private even though this test runs under umask 022.
        for name in ("host.log", "microclaw-host.pid", "http-token"):
            assert stat.S_IMODE((tmp_path / "data" / name).stat().st_mode) == 0o600, name
    finally:
        stopped = run([str(BIN / "microclaw-host"), "stop"], env, tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert not pidfile.exists()
    # Gone, or a zombie waiting for this container's init to reap it: either way not running.
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


class _Broken(http.server.BaseHTTPRequestHandler):
    """A host stand-in that answers every request with a server error (no JSON)."""

    def _answer(self) -> None:
        self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"Internal Server Error")

    do_GET = do_POST = _answer

    def log_message(self, *_: object) -> None:
        pass


def test_chat_prints_a_clear_error_when_the_host_answers_500(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(env["MICROCLAW_HTTP__PORT"])), _Broken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = run([str(BIN / "microclaw"), "chat", "-m", "hi", "--timeout", "5"], env, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "the host answered 500: Internal Server Error" in result.stderr


def test_chat_and_status_explain_a_refused_token_and_a_host_that_is_down(make_stack) -> None:  # noqa: F811
    stack = make_stack()
    chat = [str(BIN / "microclaw"), "chat", "-m", "hi", "--timeout", "5"]
    down = run(chat, stack.env, stack.root)
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "the host is not running" in down.stderr
    stack.host()
    stack.wait_host()
    token_file = stack.settings.http_token_path
    token = token_file.read_text()
    token_file.write_text("a-token-from-another-install-" + "x" * 20)
    refused = run(chat, stack.env, stack.root)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "the host refused this client (401" in refused.stderr
    assert str(token_file) in refused.stderr
    health = run([str(BIN / "microclaw-host"), "health"], stack.env, stack.root)
    assert health.returncode == 1 and "401" in health.stderr
    token_file.write_text(token)
    bad_chat = run([*chat[:-2], "--chat-id", "tg:-100123"], stack.env, stack.root)
    assert bad_chat.returncode == 1 and "Traceback" not in bad_chat.stderr
    assert "chat_id must be a local chat" in bad_chat.stderr
