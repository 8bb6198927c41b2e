"""requirements.lock covers pyproject.toml: `make run` and `make test` install from the lock and
then MicroClaw with --no-deps, so a dependency added to pyproject but not re-pinned (`make lock`)
would be missing on a fresh machine."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.split(";")[0].strip()
    return pins


def test_every_runtime_and_test_dependency_is_pinned_within_its_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    pins = _pinned()
    problems = []
    for spec in wanted:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name} is not in requirements.lock (run `make lock`)")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req.name}=={pins[name]} is outside {req.specifier} (run `make lock`)")
    assert problems == []
