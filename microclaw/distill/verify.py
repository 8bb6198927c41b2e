"""Verification in TensorFlow Lite Micro (the PyPI ``tflite-micro`` interpreter, pinned).

`run_tflm` runs the exported ``.tflite`` on int8 rows; `check_bit_exact` compares it with the
numpy reference (`QuantModel.logits`) and raises `NotBitExact` on the first differing row;
`measure_arena` finds the smallest tensor arena (to 16 bytes) in which the interpreter
allocates and invokes the model, by bisection. The figure is measured on this 64-bit host, so it
is an upper bound for the device's 32-bit build (pointers in the arena's bookkeeping are half as
wide there); the bundle ships it rounded up with `ARENA_MARGIN`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from microclaw.distill.quantize import QuantModel

ARENA_MARGIN = 256  # bytes added to the measured minimum (alignment on the device's allocator)
_MAX_ARENA = 1 << 20


class NotBitExact(AssertionError):
    """tflite-micro and the reference disagree; the message names the first row."""


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The interpreter prints allocation failures from C++ to fd 2: keep them off the terminal."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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


def _fits(model: bytes, arena: int, probe: np.ndarray) -> bool:
    try:
        with _quiet_stderr():
            interpreter = _interpreter(model, arena)
            interpreter.set_input(probe, 0)
            interpreter.invoke()
    except (RuntimeError, ValueError):
        return False
    return True


def measure_arena(model: bytes, input_dim: int) -> int:
    """Smallest arena size (bytes, multiple of 16) that allocates and invokes ``model``."""
    import numpy as np

    probe = np.zeros((1, input_dim), np.int8)
    low, high = 0, 1024
    while not _fits(model, high, probe):
        low, high = high, high * 2
        if high > _MAX_ARENA:
            raise RuntimeError("the model does not fit a 1 MiB arena")
    while high - low > 16:
        mid = (low + high) // 2 // 16 * 16
        if _fits(model, mid, probe):
            high = mid
        else:
            low = mid
    return high
