"""Both command lines answer --version with the installed package's version."""

from __future__ import annotations

from importlib.metadata import version

from click.testing import CliRunner

from microclaw.cli.chat import main
from microclaw.cli.host import host_main


def test_version_on_both_clis() -> None:
    for cli, prog in ((main, "microclaw"), (host_main, "microclaw-host")):
        result = CliRunner().invoke(cli, ["--version"])
        assert result.exit_code == 0
        assert result.output.strip() == f"{prog}, version {version('microclaw')}"


def test_status_gives_the_exact_fix_when_the_sandbox_image_is_missing() -> None:
    from microclaw.cli.host import _sandbox_line

    line = _sandbox_line(
        {
            "state": "unavailable",
            "reason": "image not found: microclaw-sandbox:latest",
            "backend": "docker",
            "image": "microclaw-sandbox:latest",
        }
    )
    assert "fix: build it: `docker build -t microclaw-sandbox:latest sandbox-image/`" in line
    assert "build-test-image.sh microclaw-sandbox:latest" in line
    assert "fix" not in _sandbox_line({"state": "ready", "backend": "docker", "image": "x"})
