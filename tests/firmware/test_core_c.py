"""The firmware core's C tests, run here in two builds (firmware/README.md "Portable core"):

- host gcc with AddressSanitizer and UndefinedBehaviorSanitizer;
- xtensa-lx106-elf-gcc + picolibc, run in QEMU's Xtensa ``sim`` machine with semihosting: 32-bit
  Xtensa code generation (the ESP8266's lx106 core, not the ESP32-S3's LX7).

Both link test vectors made now by the gateway's Python code (manifests signed with
`cryptography` Ed25519 through microclaw.gateway.ota, SHA-256 from hashlib, frames from
microclaw.gateway.protocol): C verifies the good ones and rejects the tampered ones. Storage,
radio, partitions and the CSR key are a RAM HAL in these tests (they cannot exist off the
device); the POSIX HAL against the real gateway is tests/integration/firmware.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.firmware.core_build import (
    Run,
    declared_tests,
    make,
    make_vectors,
    require_tools,
    run_host,
    run_xtensa,
)

C_TESTS = declared_tests()


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_vectors(tmp_path_factory.mktemp("vectors"))


@pytest.fixture(scope="module")
def host_run(tmp_path_factory: pytest.TempPathFactory, vectors: Path) -> Run:
    require_tools("gcc", "make")
    build = tmp_path_factory.mktemp("host")
    make("host", build, vectors)
    return run_host(build / "test_core")


@pytest.fixture(scope="module")
def xtensa_run(tmp_path_factory: pytest.TempPathFactory, vectors: Path) -> Run:
    require_tools("xtensa-lx106-elf-gcc", "qemu-system-xtensa", "make")
    build = tmp_path_factory.mktemp("xtensa")
    make("xtensa", build, vectors)
    elf = (build / "test_core.elf").read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[4] == 1, "not a 32-bit ELF"
    assert int.from_bytes(elf[18:20], "little") == 94, "not an Xtensa ELF (e_machine 94)"
    return run_xtensa(build / "test_core.elf")


def test_the_runner_lists_the_tests() -> None:
    assert len(C_TESTS) >= 30 and len(set(C_TESTS)) == len(C_TESTS)


@pytest.mark.xdist_group("fwcore-host")
def test_host_sanitized_run_is_clean(host_run: Run) -> None:
    assert "runtime error" not in host_run.output, host_run.output[-4000:]
    assert "AddressSanitizer" not in host_run.output, host_run.output[-4000:]
    assert host_run.returncode == 0, host_run.output[-4000:]
    assert set(host_run.results) == set(C_TESTS)


@pytest.mark.xdist_group("fwcore-host")
@pytest.mark.parametrize("name", C_TESTS)
def test_host(host_run: Run, name: str) -> None:
    status, why = host_run.results.get(name, ("MISSING", "the test did not report"))
    assert status == "PASS", f"{name}: {status} {why}"


@pytest.mark.xdist_group("fwcore-xtensa")
def test_xtensa_run_exits_cleanly(xtensa_run: Run) -> None:
    assert xtensa_run.returncode == 0, xtensa_run.output[-4000:]
    assert set(xtensa_run.results) == set(C_TESTS)


@pytest.mark.xdist_group("fwcore-xtensa")
@pytest.mark.parametrize("name", C_TESTS)
def test_xtensa(xtensa_run: Run, name: str) -> None:
    status, why = xtensa_run.results.get(name, ("MISSING", "the test did not report"))
    assert status == "PASS", f"{name}: {status} {why}"


@pytest.mark.xdist_group("fwcore-host")
def test_c_really_checks_the_python_signatures(tmp_path: Path) -> None:
    """With one good manifest's signature corrupted after Python signed it (the vectors still say
    "good"), the C verification must fail that test: the C side is not waving things through."""
    require_tools("gcc", "make")
    vectors = make_vectors(tmp_path / "vectors", corrupt=True)
    make("host", tmp_path / "build", vectors)
    run = run_host(tmp_path / "build" / "test_core")
    assert run.returncode != 0
    status, why = run.results["test_manifests_signed_by_python_verify_in_c"]
    assert status == "FAIL" and "good_model" in why, why
    assert run.results["test_sha256_matches_hashlib"][0] == "PASS"
