"""Export of the int8 model: a ``.tflite`` flatbuffer for TensorFlow Lite Micro, and the same
numbers as a flat little-endian blob for the firmware core's C inference (``mc_model.c``).

The flatbuffer is built with the schema's generated object API that ships with the pinned
``tflite-micro`` wheel (``schema_py_generated``) over the ``flatbuffers`` runtime: one subgraph,
two FULLY_CONNECTED operators (the first with a fused ReLU), int8 weights with per-channel (or
per-tensor) scales, int32 biases. Constant buffers are 16-byte aligned, as TFLM wants for
in-place use from flash. Deterministic: the same `QuantModel` gives the same bytes.

The blob (``model.mcm``, format `MCM_MAGIC` v1) holds what the kernels use at run time, with the
multipliers and shifts precomputed exactly as TFLM's Prepare computes them (all integers)::

    "MCM1" u32 version=1 u32 n_layers
    per layer: u32 in, u32 out, i32 input_offset, i32 output_offset, i32 act_min, i32 act_max,
               i32 multiplier[out], i32 shift[out], i32 bias[out], i8 weights[out*in] (row-major),
               padding to 4 bytes
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from microclaw.distill.quantize import QuantLayer, QuantModel

MCM_MAGIC = b"MCM1"
MCM_VERSION = 1


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return schema


def to_tflite(model: QuantModel, description: str = "microclaw router") -> bytes:
    import flatbuffers
    import numpy as np

    fb = _schema()

    class AlignedBuffer(fb.BufferT):  # type: ignore[name-defined]
        """A constant buffer whose bytes start on a 16-byte boundary."""

        def __init__(self, payload: bytes) -> None:
            super().__init__()
            self.payload = payload

        def Pack(self, builder: Any) -> Any:
            vector = None
            if self.payload:
                builder.StartVector(1, len(self.payload), 16)
                builder.head = builder.head - len(self.payload)
                builder.Bytes[builder.head : builder.head + len(self.payload)] = self.payload
                vector = builder.EndVector()
            fb.BufferStart(builder)
            if vector is not None:
                fb.BufferAddData(builder, vector)
            return fb.BufferEnd(builder)

    buffers: list[Any] = [AlignedBuffer(b"")]
    tensors: list[Any] = []

    def tensor(
        name: str,
        shape: list[int],
        dtype: int,
        scales: list[float],
        zero_points: list[int],
        data: bytes | None = None,
        dimension: int = 0,
    ) -> int:
        t = fb.TensorT()
        t.name = name
        t.shape = shape
        t.type = dtype
        t.buffer = 0
        if data is not None:
            buffers.append(AlignedBuffer(data))
            t.buffer = len(buffers) - 1
        q = fb.QuantizationParametersT()
        q.scale = [float(s) for s in scales]
        q.zeroPoint = [int(z) for z in zero_points]
        q.quantizedDimension = dimension
        t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    first = model.layers[0]
    x = tensor(
        "features", [1, model.input_dim], fb.TensorType.INT8, [first.input_scale], [first.input_zero_point]
    )
    operators = []
    for i, layer in enumerate(model.layers):
        out_dim, in_dim = layer.weights.shape
        scales = layer.weight_scales if layer.per_channel else layer.weight_scales[:1]
        w = tensor(
            f"dense{i}/weights",
            [out_dim, in_dim],
            fb.TensorType.INT8,
            list(scales),
            [0] * len(scales),
            layer.weights.astype(np.int8).tobytes(),
        )
        bias_scales = np.float32(layer.input_scale) * scales
        b = tensor(
            f"dense{i}/bias",
            [out_dim],
            fb.TensorType.INT32,
            list(bias_scales),
            [0] * len(scales),
            layer.bias.astype("<i4").tobytes(),
        )
        last = i == len(model.layers) - 1
        y = tensor(
            "logits" if last else f"dense{i}/out",
            [1, out_dim],
            fb.TensorType.INT8,
            [layer.output_scale],
            [layer.output_zero_point],
        )
        op = fb.OperatorT()
        op.opcodeIndex = 0
        op.inputs = [x, w, b]
        op.outputs = [y]
        op.builtinOptionsType = fb.BuiltinOptions.FullyConnectedOptions
        options = fb.FullyConnectedOptionsT()
        options.fusedActivationFunction = (
            fb.ActivationFunctionType.RELU if layer.relu else fb.ActivationFunctionType.NONE
        )
        op.builtinOptions = options
        operators.append(op)
        x = y
    code = fb.OperatorCodeT()
    code.builtinCode = fb.BuiltinOperator.FULLY_CONNECTED
    code.deprecatedBuiltinCode = fb.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    graph = fb.SubGraphT()
    graph.tensors = tensors
    graph.inputs = [0]
    graph.outputs = [x]
    graph.operators = operators
    graph.name = "main"
    root = fb.ModelT()
    root.version = 3
    root.operatorCodes = [code]
    root.subgraphs = [graph]
    root.description = description
    root.buffers = buffers
    builder = flatbuffers.Builder(4096)
    builder.Finish(root.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _layer_blob(layer: QuantLayer) -> bytes:
    import numpy as np

    out_dim, in_dim = layer.weights.shape
    low, high = layer.activation_range
    head = struct.pack(
        "<IIiiii", in_dim, out_dim, -layer.input_zero_point, layer.output_zero_point, low, high
    )
    body = (
        layer.multipliers.astype("<i4").tobytes()
        + layer.shifts.astype("<i4").tobytes()
        + layer.bias.astype("<i4").tobytes()
        + layer.weights.astype(np.int8).tobytes()
    )
    pad = b"\0" * (-len(body) % 4)
    return head + body + pad


def to_blob(model: QuantModel) -> bytes:
    return (
        MCM_MAGIC
        + struct.pack("<II", MCM_VERSION, len(model.layers))
        + b"".join(_layer_blob(layer) for layer in model.layers)
    )


def int8_rows(x: np.ndarray) -> list[list[int]]:
    return [[int(v) for v in row] for row in x]
