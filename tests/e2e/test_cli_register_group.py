"""``microclaw-host register-group`` refusing a folder another group uses: one clear line."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import base_env

BIN = Path(sys.executable).parent


def register(env: dict[str, str], cwd: Path, jid: str, folder: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "microclaw-host"), "register-group", jid, "--name", jid, "--folder", folder],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_folder_collision_is_one_clear_line_and_changes_nothing(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    assert register(env, tmp_path, "tg:1", "telegram_team").returncode == 0
    clash = register(env, tmp_path, "tg:2", "telegram_team")
    assert clash.returncode == 1
    assert "Traceback" not in clash.stderr and "IntegrityError" not in clash.stderr
    assert "folder 'telegram_team' is already used by tg:1" in " ".join(clash.stderr.split())
    conn = sqlite3.connect(tmp_path / "data" / "microclaw.db")
    try:
        rows = conn.execute(
            "SELECT jid, folder FROM registered_groups WHERE jid LIKE 'tg:%' ORDER BY jid"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [("tg:1", "telegram_team")]
    # Re-registering the same chat with its own folder is still allowed (a rename).
    assert register(env, tmp_path, "tg:1", "telegram_team").returncode == 0
