"""The gateway process's start: the database migration runs in a child process (so the
gateway's memory never holds the migration tooling), and a migration that fails stops the
start with the reason, as it did in-process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import base_env
from tests.integration.gateway.harness import GATEWAY_FAST

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def test_a_failing_migration_stops_the_gateway_with_the_reason(tmp_path: Path) -> None:
    env = base_env(tmp_path, **GATEWAY_FAST)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "microclaw.db").write_bytes(b"this is not a database" * 100)
    result = subprocess.run(
        [str(BIN / "microclaw-gateway"), "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "database migration failed, not starting" in result.stderr


def test_the_migration_alone_creates_the_database(tmp_path: Path) -> None:
    env = base_env(tmp_path, **GATEWAY_FAST)
    result = subprocess.run(
        [sys.executable, "-m", "microclaw.cli.gateway", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "microclaw.db").stat().st_size > 0
