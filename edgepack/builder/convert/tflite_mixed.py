"""Mixed fp16/fp32 TFLite models: fp16 weights everywhere except in the layers named.

The TFLite converter's fp16 mode stores every float constant as fp16 behind a DEQUANTIZE op
and has no per-layer block list. This pass does the same on an fp32 flatbuffer, skipping the
constants of the ops whose output tensor is in KEEP_FLOAT — so a layer whose weights fp16 cannot
represent keeps fp32 and everything else still halves in size.
"""

from __future__ import annotations

import numpy as np

DEQUANTIZE_FP16_VERSION = 3  # DEQUANTIZE reads fp16 from version 3 on


def fp16_except(fp32_model: bytes, keep_float: set[str]) -> bytes:
    """Return FP32_MODEL with fp16 weights, except for the ops whose output tensor is in KEEP_FLOAT."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(fp32_model, 0))
    dequantize = _opcode(model, fb, fb.BuiltinOperator.DEQUANTIZE)
    for graph in model.subgraphs:
        done: dict[int, int] = {}  # fp32 constant -> its fp16 twin (a weight shared by two ops)
        operators = []
        for op in graph.operators:
            name = graph.tensors[op.outputs[0]].name.decode() if len(op.outputs) else ""
            for index in [] if name in keep_float else list(op.inputs):
                tensor = graph.tensors[index] if index >= 0 else None
                data = model.buffers[tensor.buffer].data if tensor is not None else None
                if tensor is None or tensor.type != fb.TensorType.FLOAT32 or data is None or len(data) == 0 or index in done:
                    continue
                half = fb.BufferT()
                half.data = np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), np.float32).astype(np.float16).view(np.uint8)
                model.buffers.append(half)
                twin = fb.TensorT()
                twin.shape, twin.type, twin.name = tensor.shape, fb.TensorType.FLOAT16, tensor.name + b"_fp16"
                twin.buffer = len(model.buffers) - 1
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


def _opcode(model, fb, builtin: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, DEQUANTIZE_FP16_VERSION)
            return i
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = builtin
    code.version = DEQUANTIZE_FP16_VERSION
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1
