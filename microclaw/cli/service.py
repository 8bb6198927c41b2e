"""``microclaw-host install-service``: write systemd user units or launchd agents for this install.

The units are `microclaw.runtime.service`'s; this command picks the paths (the project
directory holding the Procfile, this venv's ``bin``, the project's ``.env``) and writes files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from microclaw.cli.common import console, fail


@click.command(
    "install-service", help="Write systemd user units (--systemd DIR) or launchd agents (--launchd DIR)."
)
@click.option("--systemd", "systemd_dir", type=click.Path(path_type=Path), help="e.g. ~/.config/systemd/user")
@click.option("--launchd", "launchd_dir", type=click.Path(path_type=Path), help="e.g. ~/Library/LaunchAgents")
@click.option(
    "--project",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path.cwd,
    help="The project directory (with the Procfile and .env); default: here.",
)
def install_service(systemd_dir: Path | None, launchd_dir: Path | None, project: Path) -> None:
    from microclaw.runtime.service import launchd_plists, systemd_units

    if (systemd_dir is None) == (launchd_dir is None):
        fail("give exactly one of --systemd DIR or --launchd DIR", code=2)
    project = project.absolute()
    procfile = project / "Procfile"
    if not procfile.is_file():
        fail(f"no Procfile in {project}; run this from the project directory or pass --project")
    venv_bin = Path(sys.executable).parent.absolute()
    if systemd_dir is not None:
        target = systemd_dir.expanduser()
        target.mkdir(parents=True, exist_ok=True)
        for name, text in systemd_units(procfile, project, venv_bin, project / ".env").items():
            (target / name).write_text(text, encoding="utf-8")
            console.print(f"wrote {target / name}")
        console.print(
            "next: systemctl --user daemon-reload && systemctl --user enable --now microclaw.target\n"
            "      (and `loginctl enable-linger $USER` so it runs without a login session)"
        )
        return
    assert launchd_dir is not None
    target = launchd_dir.expanduser()
    target.mkdir(parents=True, exist_ok=True)
    logs = project / "data" / "logs"
    logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, data in launchd_plists(procfile, project, venv_bin, logs).items():
        (target / name).write_bytes(data)
        console.print(f"wrote {target / name}")
    console.print(f"next: launchctl load -w {target}/local.microclaw.*.plist   (logs in {logs})")
