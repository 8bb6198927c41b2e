"""Verification in TensorFlow Lite Micro (the PyPI ``tflite-micro`` interpreter, pinned).

`run_tflm` runs the exported ``.tflite`` on int8 rows; `check_bit_exact` compares it with the
numpy reference (`QuantModel.logits`) and raises `NotBitExact` on the first differing row;
`measure_arena` starts from the tensor arena the interpreter's recording allocator reports and
finds the smallest size (16-byte steps) in which a fresh interpreter allocates and runs the model,
each probe in a forked child (TFLM crashed with SIGSEGV after failed allocations). The figure is
measured on this 64-bit host, so it is an upper bound for the device's 32-bit build (pointers in
the arena's bookkeeping are half as wide there); the bundle adds `ARENA_MARGIN`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from microclaw.distill.quantize import QuantModel

ARENA_MARGIN = 256  # bytes added to the measured minimum (alignment on the device's allocator)
_MAX_ARENA = 1 << 20


class NotBitExact(AssertionError):
    """tflite-micro and the reference disagree; the message names the first row."""


def _interpreter(model: bytes, arena: int) -> Any:
    from tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=arena)


def run_tflm(model: bytes, rows: np.ndarray, arena: int = 64 * 1024) -> np.ndarray:
    """int8 outputs of the ``.tflite`` ``model`` for each int8 row of ``rows``."""
    import numpy as np

    interpreter = _interpreter(model, arena)
    outputs = []
    for row in rows:
        interpreter.set_input(row.reshape(1, -1).astype(np.int8), 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0)).reshape(-1).astype(np.int8))
    return np.stack(outputs) if outputs else np.zeros((0, 0), np.int8)


def check_bit_exact(model: bytes, reference: QuantModel, rows: np.ndarray) -> np.ndarray:
    """The interpreter's outputs on ``rows`` if they equal the reference's bit for bit."""
    import numpy as np

    got = run_tflm(model, rows)
    want = reference.logits(rows)
    if got.shape != want.shape:
        raise NotBitExact(f"output shape {got.shape} != reference {want.shape}")
    bad = np.nonzero((got != want).any(axis=1))[0]
    if len(bad):
        row = int(bad[0])
        raise NotBitExact(
            f"{len(bad)} of {len(rows)} rows differ; first: row {row}: tflite-micro "
            f"{got[row].tolist()} != reference {want[row].tolist()}"
        )
    return got


def measure_arena(model: bytes, input_dim: int) -> int:
    """The tensor arena bytes ``model`` uses, as TFLM's recording allocator reports them after an
    invocation (``Arena allocation total N bytes``); then the model is run once more in an arena
    of exactly that size to prove it is enough. (Probing ever smaller arenas instead crashed the
    interpreter with a segmentation fault for some sizes.)"""
    import re
    import tempfile

    import numpy as np

    probe = np.zeros((1, input_dim), np.int8)
    interpreter = _interpreter(model, _MAX_ARENA)
    interpreter.set_input(probe, 0)
    interpreter.invoke()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            interpreter.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode(errors="replace")
    match = re.search(r"Arena allocation total (\d+) bytes", text)
    if match is None:
        raise RuntimeError(f"tflite-micro printed no arena total: {text[:200]!r}")
    recorded = int(match.group(1))
    # Prepare may need temporary space beyond what stays allocated: bisect [recorded, +4 KiB] for
    # the smallest size in which a fresh interpreter allocates and runs the model. Each probe
    # runs in a forked child: TFLM can crash the process (SIGSEGV) after a failed allocation.
    low, high = recorded - 16, recorded + 4096
    if not _fits_in_child(model, high, probe):
        raise RuntimeError(f"the model did not allocate within 4 KiB above the recorded {recorded} bytes")
    while high - low > 16:
        mid = (low + high) // 2 // 16 * 16
        if _fits_in_child(model, mid, probe):
            high = mid
        else:
            low = mid
    return high


def _fits_in_child(model: bytes, arena: int, probe: np.ndarray) -> bool:
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            interpreter = _interpreter(model, arena)
            interpreter.set_input(probe, 0)
            interpreter.invoke()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
