"""`microclaw-host doctor`: each broken precondition we can create here fails its check, with a fix.

Real files, the real Docker engine (the offline test image), loopback ports; no mocks.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from microclaw.config import load_settings
from microclaw.runtime import doctor
from microclaw.store.db import migrate
from tests.conftest import free_port

TEST_IMAGE = "microclaw-sandbox-test:latest"


@pytest.fixture
def env(isolated_env, monkeypatch):
    monkeypatch.setenv("MICROCLAW_SANDBOX__IMAGE", TEST_IMAGE)
    settings = load_settings()
    migrate(settings.store.db_path)
    return monkeypatch


def by_name(settings=None) -> dict[str, doctor.Check]:
    return {c.name: c for c in doctor.run_checks(settings or load_settings())}


def test_a_healthy_install_passes(env) -> None:
    checks = by_name()
    assert doctor.failed(list(checks.values())) == []
    assert checks["sandbox exec"].ok is True and checks["database"].ok is True


def test_a_data_dir_others_can_read_fails(env) -> None:
    data = load_settings().data_dir
    data.chmod(0o755)
    got = by_name()["data dir"]
    assert got.ok is False and "chmod 700" in got.fix


def test_a_corrupt_database_fails(env) -> None:
    db = load_settings().store.db_path
    with open(db, "r+b") as f:
        f.seek(0)
        f.write(b"this is not a sqlite file" * 10)
    got = by_name()["database"]
    assert got.ok is False and "backup" in got.fix


def test_a_schema_behind_the_code_fails(env) -> None:
    db = load_settings().store.db_path
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    got = by_name()["database"]
    assert got.ok is False and "0001" in got.detail and got.fix == "`microclaw-host migrate`"


def test_a_corrupt_broker_file_fails(env) -> None:
    settings = load_settings()
    from microclaw.broker.transport import sqlite_path

    sqlite_path(settings.broker.url).write_bytes(b"garbage" * 1000)
    assert by_name()["broker"].ok is False


def test_docker_unreachable_fails(env, tmp_path: Path) -> None:
    env.setenv("MICROCLAW_SANDBOX__DOCKER_URL", f"unix://{tmp_path}/no-docker.sock")
    got = by_name()["docker"]
    assert got.ok is False and "start Docker" in got.fix


def test_a_missing_sandbox_image_fails_with_the_build_command(env) -> None:
    env.setenv("MICROCLAW_SANDBOX__IMAGE", "microclaw-no-such-image:latest")
    got = by_name()["sandbox image"]
    assert got.ok is False
    assert "docker build -t microclaw-no-such-image:latest sandbox-image/" in got.fix
    assert "build-test-image.sh" in got.fix


def test_an_unreachable_provider_fails(env) -> None:
    env.setenv("MICROCLAW_AGENT__PROVIDER", "openai")
    env.setenv("OPENAI_API_KEY", "sk-test")
    env.setenv("MICROCLAW_AGENT__MODEL", "gpt-test")
    env.setenv("MICROCLAW_AGENT__BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    got = by_name()["provider"]
    assert got.ok is False and "ConnectError" in got.detail


def test_invalid_allowlist_files_fail(env, tmp_path: Path) -> None:
    settings = load_settings()
    settings.sender_allowlist_path.write_text("{not json")
    settings.mount_allowlist_path.write_text(json.dumps({"allowedRoots": "nope"}))
    checks = by_name()
    assert checks["sender allowlist"].ok is False and "not valid JSON" in checks["sender allowlist"].detail
    assert checks["mount allowlist"].ok is False
    settings.sender_allowlist_path.write_text(json.dumps({"default": {"allow": "*", "mode": "sometimes"}}))
    assert by_name()["sender allowlist"].ok is False


def test_a_clock_in_the_past_fails(env) -> None:
    got = doctor._clock(load_settings(), now=lambda: 1_000_000_000.0)
    assert got.ok is False and "NTP" in got.fix


def test_the_gateway_is_reported_off_by_default_and_its_voice_engines_checked_when_on(
    env, tmp_path: Path
) -> None:
    off = by_name()["gateway"]
    assert off.ok is None and "enabled = true" in off.fix
    env.setenv("MICROCLAW_GATEWAY__ENABLED", "true")
    on = by_name()
    assert on["gateway"].ok is True
    assert on["speech to text"].ok is True and on["text to speech"].ok is True  # both installed here
    env.setenv("PATH", str(tmp_path))  # no espeak-ng on this PATH
    missing = by_name()["text to speech"]
    assert missing.ok is False and "apt-get install espeak-ng" in missing.fix
