"""`microclaw-host why` and `replies` as a user runs them, on a fresh data directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import base_env

BIN = Path(sys.executable).parent


def host(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "microclaw-host"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_why_tells_the_story_of_the_smoke_message_through_the_cli(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    smoke = host(["smoke"], env, tmp_path)
    assert smoke.returncode == 0, smoke.stderr
    sent = (
        next(line for line in smoke.stdout.splitlines() if line.startswith("sent:")).split(":", 1)[1].strip()
    )

    told = host(["why", "--chat", "local:smoke", "--text", sent], env, tmp_path)
    assert told.returncode == 0, told.stderr
    assert "answered: reply #" in told.stdout and "delivered" in told.stdout
    assert "via local" in told.stdout and "model call(s)" in told.stdout

    as_json = json.loads(
        host(["why", "--chat", "local:smoke", "--text", sent, "--json"], env, tmp_path).stdout
    )
    assert as_json["outcome"] == "answered" and as_json["run_ids"]

    missing = host(["why", "local:nope:1"], env, tmp_path)
    assert missing.returncode == 0 and "not_found" in missing.stdout
    usage = host(["why"], env, tmp_path)
    assert usage.returncode == 2 and "MESSAGE_ID" in usage.stderr

    listed = host(["replies", "list"], env, tmp_path)
    assert listed.returncode == 0 and "no failed or uncertain replies" in listed.stdout
    refused = host(["replies", "retry", str(as_json["outbox_ids"][0])], env, tmp_path)
    assert refused.returncode == 1 and "delivered" in refused.stderr


def test_doctor_exits_non_zero_with_a_fix_for_each_failure(tmp_path: Path) -> None:
    env = base_env(tmp_path, MICROCLAW_SANDBOX__IMAGE="microclaw-no-such-image:latest")
    assert host(["migrate"], env, tmp_path).returncode == 0
    result = host(["doctor"], env, tmp_path)
    assert result.returncode == 1
    assert "FAIL sandbox image" in result.stdout
    assert "fix: build it: `docker build -t microclaw-no-such-image:latest sandbox-image/`" in result.stdout
    healthy = host(
        ["doctor", "--json"], {**env, "MICROCLAW_SANDBOX__IMAGE": "microclaw-sandbox-test:latest"}, tmp_path
    )
    assert healthy.returncode == 0, healthy.stdout
    assert {c["name"] for c in json.loads(healthy.stdout)} >= {"python", "database", "sandbox exec", "clock"}
