"""The host never loads the distillation's heavy libraries: they come from the optional
``distill`` extra and are imported only inside the stages that need them."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numpy", "tflite_micro", "flatbuffers", "threadpoolctl")


def test_entry_points_and_distill_modules_import_without_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "import microclaw.cli.chat, microclaw.cli.host, microclaw.runtime.wiring\n"
        "import microclaw.distill.pipeline, microclaw.distill.bundle, microclaw.distill.canary\n"
        "import microclaw.distill.teacher, microclaw.distill.traces, microclaw.distill.report\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
