"""``microclaw-host install-service``: systemd user units or launchd agents for the Procfile's stack.

One unit per Procfile process plus ``microclaw.target`` that starts them all. Each unit runs
its command directly (absolute paths into the venv, no shell wrapper), from the project
directory, with ``Restart=on-failure``, ``KillMode=mixed`` (SIGTERM to the main process, then
SIGKILL to whatever remains in the cgroup after the timeout) and ``EnvironmentFile=-`` naming
the project's ``.env``: secrets stay in that file and are never copied into a unit. ``%`` is
systemd's specifier character, so it is doubled: Celery, not systemd, expands ``%h`` in worker
names to the host name. launchd has no environment file; its agents run in the project
directory, where the settings loader reads ``.env`` itself.
"""

from __future__ import annotations

import plistlib
import shlex
from dataclasses import dataclass
from pathlib import Path

TARGET = "microclaw.target"


@dataclass(frozen=True)
class Process:
    name: str
    argv: list[str]


def read_procfile(path: Path) -> list[Process]:
    """The active ``name: command`` lines of a Procfile (comments and blanks skipped)."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, _, command = line.partition(":")
        found.append(Process(name.strip(), shlex.split(command)))
    return found


def resolve_argv(argv: list[str], venv_bin: Path) -> list[str]:
    """The command with its program made an absolute path into the venv (any program the venv
    installs: celery and every MicroClaw entry point, the gateway's included)."""
    program = argv[0]
    if "/" not in program and (venv_bin / program).exists():
        program = str(venv_bin / program)
    return [program, *argv[1:]]


def _systemd_quote(arg: str) -> str:
    escaped = arg.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"' if any(c in arg for c in " \t\"'") else escaped


def systemd_units(procfile: Path, project: Path, venv_bin: Path, env_file: Path) -> dict[str, str]:
    """File name -> text of each unit (and the target), for ``systemctl --user``."""
    processes = read_procfile(procfile)
    names = [f"microclaw-{p.name}.service" for p in processes]
    units = {
        TARGET: "\n".join(
            [
                "[Unit]",
                "Description=MicroClaw (every process of the Procfile)",
                f"Wants={' '.join(names)}",
                "",
                "[Install]",
                "WantedBy=default.target",
                "",
            ]
        )
    }
    for process, unit in zip(processes, names, strict=True):
        exec_start = " ".join(_systemd_quote(a) for a in resolve_argv(process.argv, venv_bin))
        units[unit] = "\n".join(
            [
                "[Unit]",
                f"Description=MicroClaw {process.name}",
                f"PartOf={TARGET}",
                "After=network-online.target",
                "",
                "[Service]",
                "Type=simple",
                f"WorkingDirectory={_systemd_quote(str(project))}",
                f"EnvironmentFile=-{_systemd_quote(str(env_file))}",
                f"Environment={_systemd_quote('PATH=' + str(venv_bin) + ':/usr/local/bin:/usr/bin:/bin')}",
                f"ExecStart={exec_start}",
                "Restart=on-failure",
                "RestartSec=5",
                "KillMode=mixed",
                "TimeoutStopSec=30",
                "UMask=0077",
                "",
                "[Install]",
                f"WantedBy={TARGET}",
                "",
            ]
        )
    return units


def launchd_plists(procfile: Path, project: Path, venv_bin: Path, logs: Path) -> dict[str, bytes]:
    """File name -> plist of each launchd agent (``~/Library/LaunchAgents``)."""
    plists = {}
    for process in read_procfile(procfile):
        label = f"local.microclaw.{process.name}"
        plists[f"{label}.plist"] = plistlib.dumps(
            {
                "Label": label,
                "ProgramArguments": resolve_argv(process.argv, venv_bin),
                "WorkingDirectory": str(project),
                "EnvironmentVariables": {"PATH": f"{venv_bin}:/usr/bin:/bin"},
                "RunAtLoad": True,
                "KeepAlive": {"SuccessfulExit": False},
                "ThrottleInterval": 5,
                "Umask": 0o077,
                "StandardOutPath": str(logs / f"{process.name}.log"),
                "StandardErrorPath": str(logs / f"{process.name}.log"),
            }
        )
    return plists
