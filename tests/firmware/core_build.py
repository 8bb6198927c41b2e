"""Building and running the firmware core's C tests from pytest (host gcc with sanitizers, and
xtensa-lx106-elf-gcc + QEMU's Xtensa sim machine). Shared by tests/firmware/test_core_*.py.

The C runner (Unity) prints one ``file:line:name:PASS`` or ``...:FAIL: why`` line per test; the
results are those lines, checked against the list in test/test_main.c, plus the exit code. A
missing toolchain skips on a developer machine and fails under CI (env ``CI`` set).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "firmware" / "components" / "microclaw_core"
MAKE_VECTORS = ROOT / "firmware" / "tools" / "make_vectors.py"
_LINE = re.compile(r"^[^:\n]+:\d+:(test_\w+):(PASS|FAIL|IGNORE)(.*)$", re.M)


def declared_tests() -> list[str]:
    """The C tests test_main.c runs (its TESTS(X) list)."""
    return re.findall(r"X\((test_\w+)\)", (CORE / "test" / "test_main.c").read_text())


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        message = f"missing {', '.join(missing)} (scripts/install-test-deps.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def make_vectors(out: Path, *, corrupt: bool = False) -> Path:
    env = dict(os.environ, MC_VECTORS_CORRUPT="1" if corrupt else "")
    subprocess.run([sys.executable, str(MAKE_VECTORS), str(out)], check=True, cwd=ROOT, env=env, timeout=120)
    return out


def make(target: str, build: Path, vectors: Path | None = None) -> None:
    args = ["make", "-s", "-C", str(CORE), target, f"BUILD={build}"]
    if vectors is not None:
        args.append(f"VECTORS={vectors}")
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"make {target} failed:\n{done.stdout}\n{done.stderr}"


@dataclass
class Run:
    returncode: int
    output: str
    results: dict[str, tuple[str, str]]


def parse(returncode: int, output: str) -> Run:
    results = {m.group(1): (m.group(2), m.group(3).strip(": ")) for m in _LINE.finditer(output)}
    return Run(returncode, output, results)


def run_host(binary: Path) -> Run:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    done = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300, env=env)
    return parse(done.returncode, done.stdout + done.stderr)


def qemu_cmd(elf: Path, *, icount: bool = False) -> list[str]:
    cmd = ["qemu-system-xtensa", "-M", "sim", "-cpu", "lx106"]
    if icount:
        cmd += ["-icount", "shift=0"]
    cmd += ["-display", "none", "-monitor", "none", "-serial", "none", "-semihosting"]
    return [*cmd, "-device", f"loader,file={elf},cpu-num=0"]


def run_xtensa(elf: Path) -> Run:
    done = subprocess.run(qemu_cmd(elf), capture_output=True, text=True, timeout=300)
    return parse(done.returncode, done.stdout + done.stderr)
