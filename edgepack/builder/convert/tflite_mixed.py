"""Lower the weights of an fp32 TFLite model to fp16 or int8 behind DEQUANTIZE ops, layer by layer.

The TFLite converter's fp16 mode stores every float constant as fp16 behind a DEQUANTIZE op and
has no per-layer block list; it has no weight-only int8 mode at all (its dynamic range mode also
quantizes activations at run time, on hybrid kernels slower than fp32's). These passes do it on an
fp32 flatbuffer:

- `fp16_except`: every float constant in fp16, except in the layers named;
- `int8_weights_except`: the weights of convolutions and fully connected layers in int8 (symmetric,
  one scale per output channel), except in the layers named. The arithmetic stays fp32's: the
  runtime dequantizes a constant once, at load, so it runs at fp32's speed at about int8's size.

A layer is named by its output tensor. A weight shared by two ops is lowered once.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

DEQUANTIZE_FP16_VERSION = 3  # DEQUANTIZE reads fp16 from version 3 on
DEQUANTIZE_INT8_PER_CHANNEL_VERSION = 5  # ... and per-channel int8 from version 5 on


def fp16_except(fp32_model: bytes, keep_float: set[str]) -> bytes:
    """Return FP32_MODEL with fp16 weights, except for the ops whose output tensor is in KEEP_FLOAT."""
    from tensorflow.lite.python import schema_py_generated as fb

    def half(op_code: int, position: int, weights: np.ndarray):
        return weights.astype(np.float16), fb.TensorType.FLOAT16, None

    return _lower(fp32_model, keep_float, half, DEQUANTIZE_FP16_VERSION)


def int8_weights_except(fp32_model: bytes, keep_float: set[str]) -> bytes:
    """Return FP32_MODEL with per-channel int8 weights in its convolutions and fully connected
    layers, except for the ops whose output tensor is in KEEP_FLOAT; activations stay float."""
    from tensorflow.lite.python import schema_py_generated as fb

    op = fb.BuiltinOperator
    # The filter's input position and its output-channel axis (TFLite's filter layouts).
    filters = {op.CONV_2D: (1, 0), op.DEPTHWISE_CONV_2D: (1, 3), op.FULLY_CONNECTED: (1, 0), op.TRANSPOSE_CONV: (1, 0)}

    def int8(op_code: int, position: int, weights: np.ndarray):
        if filters.get(op_code, (None,))[0] != position or weights.ndim < 2:
            return None
        axis = filters[op_code][1]
        q, scale = symmetric_int8(weights, axis)
        params = fb.QuantizationParametersT()
        params.scale, params.zeroPoint, params.quantizedDimension = scale.tolist(), [0] * len(scale), axis
        return q, fb.TensorType.INT8, params

    return _lower(fp32_model, keep_float, int8, DEQUANTIZE_INT8_PER_CHANNEL_VERSION)


def symmetric_int8(weights: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantize WEIGHTS to int8 in [-127, 127] with one scale per index of AXIS; return (int8, float32 scales)."""
    reduce = tuple(i for i in range(weights.ndim) if i != axis)
    scale = (np.abs(weights).max(axis=reduce) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0  # an all-zero channel: any scale dequantizes it exactly
    shape = [1] * weights.ndim
    shape[axis] = -1
    q = np.clip(np.round(weights / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


# (op's builtin code, input position, fp32 weights) -> (lowered array, its TFLite type, quantization) or None to keep it
Lowering = Callable[[int, int, np.ndarray], Optional[tuple]]


def _lower(fp32_model: bytes, keep_float: set[str], lowering: Lowering, dequantize_version: int) -> bytes:
    """Rewrite FP32_MODEL: each float constant that LOWERING lowers becomes a lowered twin read
    through a DEQUANTIZE op, in every op whose output tensor is not in KEEP_FLOAT."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(fp32_model, 0))
    dequantize = _opcode(model, fb, fb.BuiltinOperator.DEQUANTIZE, dequantize_version)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    for graph in model.subgraphs:
        done: dict[int, int] = {}  # fp32 constant -> its lowered twin (a weight shared by two ops)
        operators = []
        for op in graph.operators:
            name = graph.tensors[op.outputs[0]].name.decode() if len(op.outputs) else ""
            for position, index in [] if name in keep_float else list(enumerate(op.inputs)):
                tensor = graph.tensors[index] if index >= 0 else None
                data = model.buffers[tensor.buffer].data if tensor is not None else None
                if tensor is None or tensor.type != fb.TensorType.FLOAT32 or data is None or len(data) == 0 or index in done:
                    continue
                weights = np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), np.float32).reshape(list(tensor.shape) or [-1])
                lowered = lowering(codes[op.opcodeIndex], position, weights)
                if lowered is None:
                    continue
                array, tensor_type, quantization = lowered
                buffer = fb.BufferT()
                buffer.data = np.ascontiguousarray(array).view(np.uint8).ravel()
                model.buffers.append(buffer)
                twin = fb.TensorT()
                twin.shape, twin.type, twin.name = tensor.shape, tensor_type, tensor.name + b"_" + str(array.dtype).encode()
                twin.buffer, twin.quantization = len(model.buffers) - 1, quantization
                graph.tensors.append(twin)
                done[index] = len(graph.tensors) - 1
                old, tensor.buffer = tensor.buffer, 0  # now computed: the output of the DEQUANTIZE below
                if not any(t.buffer == old for g in model.subgraphs for t in g.tensors):
                    model.buffers[old].data = None
                convert = fb.OperatorT()
                convert.opcodeIndex, convert.inputs, convert.outputs = dequantize, [done[index]], [index]
                operators.append(convert)
            operators.append(op)
        graph.operators = operators
    builder = flatbuffers.Builder(len(fp32_model))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _opcode(model, fb, builtin: int, version: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, version)
            return i
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = builtin
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1
