"""Firmware core figures on the 32-bit Xtensa target (the ESP8266's lx106 core, emulated; not the
ESP32-S3's LX7, which no registry here can build for).

Prints, for the core in firmware/components/microclaw_core:
- code size per module, -Os as for a device (xtensa-lx106-elf-size: text incl. literals and
  read-only tables, data, bss), and the part of Monocypher the core links after --gc-sections;
- static RAM: the modules' data + bss (the core keeps its state in caller-provided structs), and
  the sizes of those structs on the 32-bit target;
- the offline queue's capacity in messages and its storage bytes per message;
- ed25519 manifest verification and SHA-256 cost in QEMU with ``-icount shift=0`` (one
  instruction per virtual nanosecond), as instruction counts calibrated against a loop.

Run: ``.venv/bin/python bench/firmware_core.py``. Needs scripts/install-test-deps.sh's Debian
packages. Prints figures; asserts nothing.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.firmware.core_build import make, make_vectors, qemu_cmd  # noqa: E402

MODULES = [
    "mc_common",
    "mc_json",
    "mc_frame",
    "mc_seq",
    "mc_ring",
    "mc_sha256",
    "mc_pairing",
    "mc_slots",
    "mc_ota",
    "mc_device",
    "mc_voice",
    "mc_model",
]
MONOCYPHER = ["monocypher", "monocypher-ed25519"]


def size(obj: Path) -> tuple[int, int, int]:
    out = subprocess.run(["xtensa-lx106-elf-size", str(obj)], capture_output=True, text=True, check=True)
    text, data, bss = out.stdout.splitlines()[1].split()[:3]
    return int(text), int(data), int(bss)


def defined(obj: Path) -> set[str]:
    out = subprocess.run(
        ["xtensa-lx106-elf-nm", "--defined-only", str(obj)], capture_output=True, text=True, check=True
    )
    return {line.split()[-1] for line in out.stdout.splitlines() if len(line.split()) == 3}


def frame(su: Path) -> str:
    """The largest stack frame in a module (gcc -fstack-usage), as "bytes function"."""
    rows = [line.split("\t") for line in su.read_text().splitlines() if line.strip()]
    worst = max(rows, key=lambda r: int(r[1]))
    return f"{worst[1]} {worst[0].split(':')[-1]}"


def linked_bytes(elf: Path, names: set[str]) -> int:
    out = subprocess.run(
        ["xtensa-lx106-elf-nm", "-S", "--size-sort", str(elf)], capture_output=True, text=True, check=True
    )
    total = 0
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] in names:
            total += int(parts[1], 16)
    return total


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp)
        vectors = make_vectors(build / "vectors")
        make("sizes", build)
        make("bench", build, vectors)
        print("## Code size per module (xtensa-lx106-elf-gcc 12.2, -Os, bytes)")
        print(f"{'module':<22}{'text':>8}{'data':>8}{'bss':>8}  largest stack frame (bytes, function)")
        totals = [0, 0, 0]
        for name in MODULES:
            t, d, b = size(build / "size" / f"{name}.o")
            totals = [totals[0] + t, totals[1] + d, totals[2] + b]
            print(f"{name:<22}{t:>8}{d:>8}{b:>8}  {frame(build / 'size' / f'{name}.su')}")
        print(f"{'core total':<22}{totals[0]:>8}{totals[1]:>8}{totals[2]:>8}")
        mono_names: set[str] = set()
        for name in MONOCYPHER:
            t, d, b = size(build / "size" / f"{name}.o")
            mono_names |= defined(build / "size" / f"{name}.o")
            print(f"{name + ' (whole)':<22}{t:>8}{d:>8}{b:>8}")
        used = linked_bytes(build / "bench.elf", mono_names)
        print(f"Monocypher linked for ed25519 verify after --gc-sections (-O2 build): {used} bytes")
        print(f"static RAM of the core modules (data + bss): {totals[1] + totals[2]} bytes")
        print()
        run = subprocess.run(
            qemu_cmd(build / "bench.elf", icount=True), capture_output=True, text=True, timeout=300
        )
        figures = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
        print("## On the emulated lx106 (QEMU sim, -icount shift=0)")
        for key in (
            "sizeof_mc_device_t",
            "sizeof_mc_frame_t",
            "sizeof_mc_ring_t",
            "sizeof_mc_ota_t",
            "sizeof_mc_hal_t",
        ):
            print(f"{key[7:]}: {figures[key]} bytes")
        print("(all caller-provided; mc_device_t holds one of each of the others)")
        print(
            f"offline queue: {figures['ring_default_slots']} messages by default, up to "
            f"{figures['ring_max_slots']}; each message <= {figures['ring_text_bytes_max']} bytes of text, "
            f"<= {figures['ring_slot_bytes_max']} bytes of NVS"
        )
        print(
            f"ed25519 verify (Monocypher, signature ok={figures['ed25519_verify_ok']}): "
            f"{int(figures['ed25519_verify_kinsn']) / 1000:.1f} M instructions"
        )
        print(
            f"manifest verify incl. parse + canonical check: "
            f"{int(figures['manifest_verify_kinsn']) / 1000:.1f} M instructions"
        )
        print(
            f"SHA-256: {int(figures['sha256_insn_per_byte_x100']) / 100:.1f} instructions per byte "
            f"(over {figures['sha256_bytes']} bytes)"
        )
        print("(calibration: CCOUNT", figures["calibration_ccount_per_2M_insn"], "per 2M instructions)")


if __name__ == "__main__":
    main()
