"""The firmware core's C inference (mc_model.c) agrees bit for bit with tflite-micro.

mc_model.c and a small driver are compiled with gcc and AddressSanitizer/UBSan; the driver runs
the exported ``model.mcm`` on every dataset row and the outputs are compared with the
tflite-micro interpreter's. The C featurizer must give the same buckets as features.py, and a
hostile blob (truncated, corrupted) is refused without a sanitizer report.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from microclaw.distill import dataset as ds
from microclaw.distill import features, verify
from tests.unit.distill.conftest import Built

ROOT = Path(__file__).resolve().parents[3]
CORE = ROOT / "firmware" / "components" / "microclaw_core"
HARNESS = Path(__file__).with_name("mc_model_harness.c")
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed (scripts/install-test-deps.sh installs build-essential)"
    out = tmp_path_factory.mktemp("mc_model") / "harness"
    subprocess.run(
        [
            gcc,
            "-std=c11",
            "-O1",
            "-g",
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Wconversion",
            "-Werror",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
            "-I",
            str(CORE / "include"),
            str(CORE / "src" / "mc_model.c"),
            str(HARNESS),
            "-o",
            str(out),
        ],
        check=True,
    )
    return out


def _run(harness: Path, *args: str, stdin: str = "") -> str:
    import os

    done = subprocess.run(
        [str(harness), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **SAN_ENV},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "runtime error" not in done.stderr and "AddressSanitizer" not in done.stderr, done.stderr[-2000:]
    return done.stdout


def test_c_inference_is_bit_exact_with_tflite_micro(harness: Path, small_model: Built) -> None:
    records = ds.read(small_model.paths.dataset)
    x = features.matrix([r.text for r in records], small_model.config.dim)
    want = verify.run_tflm((small_model.paths.model / "model.tflite").read_bytes(), x)
    stdin = "".join(" ".join(str(int(v)) for v in row) + "\n" for row in x)
    out = _run(harness, "invoke", str(small_model.paths.model / "model.mcm"), stdin=stdin)
    got = np.array([[int(v) for v in line.split()] for line in out.splitlines()], dtype=np.int8)
    assert got.shape == want.shape
    differing = np.nonzero((got != want).any(axis=1))[0]
    assert not len(differing), f"{len(differing)} rows differ, first {records[differing[0]].text!r}"


def test_c_featurizer_matches_python(harness: Path, small_model: Built) -> None:
    texts = [
        *[r.text for r in ds.read(small_model.paths.dataset)][:300],
        "Set a TIMER for 10 minutes!!",
        "café 12.5% off",
        "it's 3:45 now",
        "a",
        "",
        "   ",
        "x" * 300,
        "don't  stop\tme",
        "naïve 123abc456 def",
        "L'été 2025",
        "100 200 300",
    ]
    dim = small_model.config.dim
    out = _run(harness, "featurize", str(dim), stdin="".join(t + "\n" for t in texts))
    got = [[int(v) for v in line.split()] for line in out.splitlines()]
    assert got == [features.buckets(t, dim) for t in texts]


def test_hostile_blobs_are_refused_cleanly(harness: Path, small_model: Built, tmp_path: Path) -> None:
    blob = (small_model.paths.model / "model.mcm").read_bytes()
    rng = random.Random(5)
    cases = {"ok": blob, "empty": b"", "magic": b"XXXX" + blob[4:], "trailing": blob + b"\0\0\0\0"}
    for cut in (3, 11, 12, 30, len(blob) // 2, len(blob) - 1):
        cases[f"cut{cut}"] = blob[:cut]
    for i in range(20):  # corrupt header words of the layers
        mutated = bytearray(blob)
        pos = rng.choice([4, 8, 12, 16, 20, 24, 28, 32]) + rng.randrange(4)
        mutated[pos] = rng.randrange(256)
        cases[f"flip{i}"] = bytes(mutated)
    codes = {}
    for name, data in cases.items():
        path = tmp_path / f"{name}.mcm"
        path.write_bytes(data)
        codes[name] = int(_run(harness, "load", str(path)))
    assert codes["ok"] == 0
    assert all(
        codes[name] != 0 for name in ("empty", "magic", "trailing", *(f"cut{c}" for c in (3, 11, 12, 30)))
    )
    assert codes[f"cut{len(blob) - 1}"] != 0 and codes[f"cut{len(blob) // 2}"] != 0


def test_mc_model_compiles_warning_free_for_a_32_bit_xtensa_core(tmp_path: Path) -> None:
    """Debian's lx106 cross compiler (the ESP8266's core, not the S3's, but 32-bit Xtensa with
    a 32-bit size_t): no conversion or alignment warning in the portable module."""
    cc = shutil.which("xtensa-lx106-elf-gcc")
    assert cc, "gcc-xtensa-lx106 and picolibc-xtensa-lx106-elf are needed (scripts/install-test-deps.sh)"
    subprocess.run(
        [
            cc,
            "-std=c11",
            "-Os",
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Wconversion",
            "-Wcast-align",
            "-Werror",
            "--specs=/usr/lib/xtensa-lx106-elf/picolibc.specs",
            "-I",
            str(CORE / "include"),
            "-c",
            str(CORE / "src" / "mc_model.c"),
            "-o",
            str(tmp_path / "mc_model.o"),
        ],
        check=True,
    )


def test_per_tensor_quantization_is_bit_exact_in_tflite_micro_and_c(
    harness: Path, small_model: Built, tmp_path: Path
) -> None:
    """TFLM's per-tensor FULLY_CONNECTED path (one weight scale per layer) agrees too."""
    from microclaw.distill import export, quantize, train
    from microclaw.distill.pipeline import _targets, one_thread

    records = ds.read(small_model.paths.dataset)
    train_rows = [r for r in records if r.split == "train"]
    with one_thread():
        x_train = features.matrix([r.text for r in train_rows], small_model.config.dim)
        model = train.train(x_train, _targets(train_rows), small_model.config)
    qmodel = quantize.quantize(model, x_train[::5], per_channel=False)
    assert all(len(set(layer.multipliers.tolist())) == 1 for layer in qmodel.layers)
    tflite = export.to_tflite(qmodel)
    x = features.matrix([r.text for r in records], small_model.config.dim)
    want = verify.check_bit_exact(tflite, qmodel, x)
    blob = tmp_path / "per-tensor.mcm"
    blob.write_bytes(export.to_blob(qmodel))
    stdin = "".join(" ".join(str(int(v)) for v in row) + "\n" for row in x)
    out = _run(harness, "invoke", str(blob), stdin=stdin)
    got = np.array([[int(v) for v in line.split()] for line in out.splitlines()], dtype=np.int8)
    assert np.array_equal(got, want)
