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
