"""Celery's own tools on the default SQLite stack (the repository's Procfile under honcho):
``celery inspect``, ``status``, ``control``, ``events --dump`` and flower's HTTP API, driven as
a user drives them, against real worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from microclaw.broker.transport import housekeep, queue_depths
from microclaw.runtime.queues import QUEUES
from tests.conftest import base_env, free_port
from tests.integration.stack import BIN, procfile_stack, wait_for

pytestmark = pytest.mark.slow


def celery(env: dict[str, str], root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "celery"), "-A", "workers.app", *args],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _spawn(env: dict[str, str], root: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        argv, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_inspect_status_control_events_and_flower_on_the_default_stack(tmp_path: Path) -> None:
    env = base_env(tmp_path, MICROCLAW_AGENT__PROVIDER="scripted")
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    url = f"sqla+sqlite:///{tmp_path / 'data' / 'broker.db'}"
    with procfile_stack(tmp_path, env):
        roles = ("worker@",)  # the default stack's one worker process

        def every_role_answers() -> str | None:
            ping = celery(env, tmp_path, "inspect", "ping", "--timeout", "3")
            return ping.stdout if all(f"{r}" in ping.stdout for r in roles) else None

        pong = wait_for(every_role_answers, 60, "every worker role to answer inspect ping", interval=1)
        assert pong.count("pong") == 1

        active = celery(env, tmp_path, "inspect", "active_queues", "--timeout", "3")
        assert active.returncode == 0, active.stderr
        for queue in QUEUES:
            assert f"'name': '{queue}'" in active.stdout

        status = celery(env, tmp_path, "status", "--timeout", "3")
        assert "1 node online" in status.stdout, status.stdout

        limit = celery(env, tmp_path, "control", "rate_limit", "microclaw.ingest", "10/m", "--timeout", "3")
        assert limit.stdout.count("new rate limit set successfully") == 1, limit.stdout

        # Events: `celery events --dump` sees the workers' heartbeats and a task's life.
        dump = _spawn(env, tmp_path, "events", [str(BIN / "celery"), "-A", "workers.app", "events", "--dump"])
        flower_port = free_port()
        flower_env = {**env, "FLOWER_BASIC_AUTH": "admin:s3cret-for-the-test"}
        flower = _spawn(
            flower_env,
            tmp_path,
            "flower",
            [
                str(BIN / "celery"),
                "-A",
                "workers.app",
                "flower",
                "--address=127.0.0.1",
                f"--port={flower_port}",
            ],
        )
        try:
            wait_for(lambda: "heartbeat" in (tmp_path / "events.log").read_text(), 60, "worker heartbeats")
            chat = subprocess.run(
                [str(BIN / "microclaw"), "chat", "-m", "hello tools", "--timeout", "60"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert chat.returncode == 0, chat.stderr
            wait_for(
                lambda: "task succeeded: microclaw.kick" in (tmp_path / "events.log").read_text(),
                30,
                "the kick's task-succeeded event",
            )
            base = f"http://127.0.0.1:{flower_port}"

            def flower_workers() -> dict | None:
                try:
                    r = httpx.get(f"{base}/api/workers", auth=("admin", "s3cret-for-the-test"), timeout=10)
                except httpx.HTTPError:
                    return None
                return r.json() if r.status_code == 200 and len(r.json()) == 1 else None

            workers = wait_for(flower_workers, 60, "flower to list the worker", interval=1)
            assert {name.split("@")[0] for name in workers} == {"worker"}
            # flower saw the chat's tasks through events
            sent = wait_for(
                lambda: httpx.get(
                    f"{base}/api/tasks", auth=("admin", "s3cret-for-the-test"), timeout=10
                ).json(),
                30,
                "flower's task list",
            )
            assert "microclaw.kick" in {t["name"] for t in sent.values()}
            assert httpx.get(f"{base}/api/workers", timeout=10).status_code == 401  # no credentials
        finally:
            _stop(dump)
            _stop(flower)

        # Housekeeping: the clients' reply queues are gone; the killed event consumers' queues
        # expire; `status` lists only the real queues.
        housekeep(url)
        names = set(queue_depths(url))
        assert not [n for n in names if ".reply." in n], names
        db = sqlite3.connect(tmp_path / "data" / "broker.db")
        db.execute("UPDATE broker_queue SET idle_since_ms = idle_since_ms - 3600000")  # an hour later
        db.commit()
        db.close()
        housekeep(url)
        left = set(queue_depths(url))
        assert not [n for n in left if n.startswith("celeryev.")], left
        assert set(QUEUES) <= left
        status_json = subprocess.run(
            [str(BIN / "microclaw-host"), "status", "--json"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert status_json.returncode == 0, status_json.stderr
        assert set(json.loads(status_json.stdout)["queues"]) == set(QUEUES)
