"""Post-training int8 quantization and the integer reference forward pass.

Scheme (TFLite's): weights int8 symmetric per output channel (or per tensor) (zero point 0,
range [-127, 127]);
biases int32 at scale ``input_scale * weight_scale[c]``; the input is the 0/1 feature vector at
scale 1, zero point 0; the hidden activations (after ReLU) and the logits are int8 asymmetric
with ranges measured on a calibration set. Scales are float32 (what the flatbuffer stores).

`forward` is the integer arithmetic of TensorFlow Lite Micro's reference FULLY_CONNECTED kernel
(``reference_integer_ops::FullyConnectedPerChannel``): int32 accumulation of
``(input + input_offset) * filter`` plus bias, then ``MultiplyByQuantizedMultiplier`` (gemmlowp's
saturating rounding doubling high multiply and rounding divide by a power of two, with the
multiplier and shift that ``QuantizeMultiplier`` derives from the double-precision scale ratio),
plus the output zero point, clamped to the activation range. tflite-micro and the firmware's C
core (mc_model.c) must agree with it bit for bit (`verify`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from microclaw.distill.train import FloatModel

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


@dataclass
class QuantLayer:
    weights: np.ndarray  # int8 [out, in]
    weight_scales: np.ndarray  # float32 [out]
    bias: np.ndarray  # int32 [out]
    input_scale: float  # float32 value
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    relu: bool
    multipliers: np.ndarray  # int32 [out]
    shifts: np.ndarray  # int32 [out]
    per_channel: bool = True  # False: one weight scale for the whole tensor (all entries equal)

    @property
    def activation_range(self) -> tuple[int, int]:
        return (self.output_zero_point if self.relu else -128), 127


@dataclass
class QuantModel:
    layers: list[QuantLayer]

    @property
    def input_dim(self) -> int:
        return int(self.layers[0].weights.shape[1])

    @property
    def output_dim(self) -> int:
        return int(self.layers[-1].weights.shape[0])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """int8 logits for int8 inputs ``x`` (rows), exactly as the int8 kernels compute them."""
        for layer in self.layers:
            x = forward(layer, x)
        return x

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        last = self.layers[-1]
        return (q.astype("float64") - last.output_zero_point) * last.output_scale


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``real ~= multiplier * 2**(shift - 31)``, multiplier in
    [2**30, 2**31) (or 0), computed with frexp in double precision."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = math.floor(q * (1 << 31) + 0.5)  # std::round, half away from zero (q > 0)
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return q_fixed, shift


def _rounding_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int64 arrays holding int32 values."""
    import numpy as np

    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    # C++ integer division truncates toward zero.
    high = np.where(total >= 0, total // (1 << 31), -((-total) // (1 << 31)))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high)


def _rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    import numpy as np

    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    import numpy as np

    left = np.where(shift > 0, shift, 0).astype(np.int64)
    right = np.where(shift > 0, 0, -shift).astype(np.int64)
    shifted = acc.astype(np.int64) * (np.int64(1) << left)
    shifted = (shifted - INT32_MIN) % (1 << 32) + INT32_MIN  # the kernel's int32 product wraps
    return _rounding_divide_by_pot(_rounding_high_mul(shifted, multiplier.astype(np.int64)), right)


def forward(layer: QuantLayer, x: np.ndarray) -> np.ndarray:
    import numpy as np

    acc = (x.astype(np.int64) - layer.input_zero_point) @ layer.weights.astype(np.int64).T
    acc = acc + layer.bias.astype(np.int64)
    if acc.min(initial=0) < INT32_MIN or acc.max(initial=0) > INT32_MAX:
        raise OverflowError("int32 accumulator overflow")
    scaled = multiply_by_quantized_multiplier(acc, layer.multipliers, layer.shifts)
    low, high = layer.activation_range
    return np.clip(scaled + layer.output_zero_point, low, high).astype(np.int8)


def _layer(
    weights: np.ndarray,
    bias: np.ndarray,
    input_scale: float,
    input_zero_point: int,
    out_min: float,
    out_max: float,
    relu: bool,
    per_channel: bool = True,
) -> QuantLayer:
    import numpy as np

    f32 = np.float32
    max_abs = np.abs(weights).max(axis=1)
    if not per_channel:
        max_abs = np.full_like(max_abs, max_abs.max())
    weight_scales = (np.where(max_abs > 0, max_abs, 1.0) / 127.0).astype(f32)
    qw = np.clip(np.round(weights / weight_scales[:, None]), -127, 127).astype(np.int8)
    bias_scales = f32(input_scale) * weight_scales  # float32 product, as the converter computes it
    qb = np.round(bias.astype(np.float64) / bias_scales.astype(np.float64)).astype(np.int64)
    qb = np.clip(qb, INT32_MIN, INT32_MAX).astype(np.int32)
    out_min, out_max = min(out_min, 0.0), max(out_max, 0.0)
    if relu:
        out_min = 0.0
    output_scale = float(f32(max(out_max - out_min, 1e-6) / 255.0))
    zero_point = int(np.clip(round(-128 - out_min / output_scale), -128, 127))
    multipliers, shifts = [], []
    for ws in weight_scales:
        real = float(input_scale) * float(ws) / output_scale  # double, from float32 scales
        m, s = quantize_multiplier(real)
        multipliers.append(m)
        shifts.append(s)
    return QuantLayer(
        weights=qw,
        weight_scales=weight_scales,
        bias=qb,
        input_scale=float(f32(input_scale)),
        input_zero_point=input_zero_point,
        output_scale=output_scale,
        output_zero_point=zero_point,
        relu=relu,
        multipliers=np.array(multipliers, np.int32),
        shifts=np.array(shifts, np.int32),
        per_channel=per_channel,
    )


def quantize(model: FloatModel, calibration: np.ndarray, *, per_channel: bool = True) -> QuantModel:
    """int8 model from a float one; activation ranges from ``calibration`` (int8 0/1 rows).
    The logit range is measured on the int8 hidden layer's output, so the second layer's
    calibration already sees the first layer's quantization error. ``per_channel=False`` gives
    per-tensor weight scales (TFLM's plain FullyConnected path; the pipeline uses per-channel)."""
    import numpy as np

    hidden = model.hidden(calibration)
    first = _layer(model.w1, model.b1, 1.0, 0, 0.0, float(hidden.max()), relu=True, per_channel=per_channel)
    hq = forward(first, calibration)
    h_deq = (hq.astype(np.float32) - first.output_zero_point) * np.float32(first.output_scale)
    logits = h_deq @ model.w2.T + model.b2
    second = _layer(
        model.w2,
        model.b2,
        first.output_scale,
        first.output_zero_point,
        float(logits.min()),
        float(logits.max()),
        relu=False,
        per_channel=per_channel,
    )
    return QuantModel([first, second])
