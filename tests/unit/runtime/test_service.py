"""`install-service`: units for the repository's Procfile that systemd accepts and that would run."""

from __future__ import annotations

import configparser
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from microclaw.cli.host import host_main
from microclaw.runtime.service import read_procfile

ROOT = Path(__file__).resolve().parents[3]


def units(tmp_path: Path) -> Path:
    out = tmp_path / "units"
    result = CliRunner().invoke(host_main, ["install-service", "--systemd", str(out), "--project", str(ROOT)])
    assert result.exit_code == 0, result.output
    return out


def parse(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def test_one_unit_per_procfile_process_with_sane_service_settings(tmp_path: Path) -> None:
    out = units(tmp_path)
    names = [p.name for p in read_procfile(ROOT / "Procfile")]
    assert sorted(f.name for f in out.iterdir()) == sorted(
        [*(f"microclaw-{n}.service" for n in names), "microclaw.target"]
    )
    for name in names:
        unit = parse(out / f"microclaw-{name}.service")["Service"]
        program = unit["ExecStart"].split()[0]
        assert Path(program).is_absolute() and Path(program).parent == Path(sys.executable).parent.absolute()
        assert not program.endswith("sh")  # no shell wrapper
        assert unit["Restart"] == "on-failure" and unit["KillMode"] == "mixed"
        assert unit["EnvironmentFile"] == f"-{ROOT / '.env'}"
        assert unit["WorkingDirectory"] == str(ROOT)
    worker = parse(out / "microclaw-worker.service")["Service"]["ExecStart"]
    assert "worker@%%h" in worker  # Celery expands %h, not systemd (which would make it the home dir)


def test_no_secret_from_the_env_file_reaches_a_unit(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:very-secret")
    out = units(tmp_path)
    assert all("very-secret" not in f.read_text() for f in out.iterdir())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    out = units(tmp_path)
    files = sorted(str(f) for f in out.iterdir())
    result = subprocess.run(["systemd-analyze", "verify", *files], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "microclaw" not in result.stderr  # no warning about our units


def test_each_units_command_line_runs(tmp_path: Path) -> None:
    """The ExecStart program and its arguments, with --help: the path and the app load."""
    out = units(tmp_path)
    for unit in sorted(out.glob("*.service")):
        argv = parse(unit)["Service"]["ExecStart"].replace("%%", "%").split()
        result = subprocess.run([*argv, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert result.returncode == 0, (unit.name, result.stderr[-2000:])


def test_launchd_agents_are_valid_plists(tmp_path: Path) -> None:
    out = tmp_path / "agents"
    result = CliRunner().invoke(host_main, ["install-service", "--launchd", str(out), "--project", str(ROOT)])
    assert result.exit_code == 0, result.output
    host = plistlib.loads((out / "local.microclaw.host.plist").read_bytes())
    assert host["ProgramArguments"][0] == str(Path(sys.executable).parent.absolute() / "microclaw-host")
    assert host["KeepAlive"] == {"SuccessfulExit": False} and host["WorkingDirectory"] == str(ROOT)
