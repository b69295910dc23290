"""Weight-only int8 for ONNX: int8 weights behind DequantizeLinear, float activations.

Each Conv, ConvTranspose, Gemm and MatMul weight (an initializer, or a `Constant` as some
exporters write them) is stored as int8 with one symmetric scale per output channel and read
through a DequantizeLinear node; every activation stays float. The model is about int8's size and
answers with only the weights' rounding error, which is far below 8-bit activations' where a
model's activations have outliers; onnxruntime runs the float arithmetic, dequantizing the weights
on each run (measured about 1.25x fp32's time on a 320x320 detector).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgepack.builder.convert.onnx_quant import MIN_PER_CHANNEL_OPSET, constants_to_initializers, upgrade_opset
from edgepack.builder.convert.tflite_mixed import symmetric_int8
from edgepack.model.onnx_graph import ai_onnx_opset

# The weight's input position, and its output-channel axis (Gemm's depends on transB; MatMul's is
# the last, -1). Any axis dequantizes correctly: the output channel's gives each its own scale.
WEIGHT_INPUTS = {"Conv": (1, 0), "ConvTranspose": (1, 1), "Gemm": (1, 1), "MatMul": (1, -1)}


def int8_weights(proto, keep_float: Sequence[str] = ()) -> tuple[object, dict]:
    """Return (PROTO with int8 weights in every weighted node not named in KEEP_FLOAT, facts)."""
    import onnx
    from onnx import helper, numpy_helper

    proto, moved = constants_to_initializers(proto)
    proto, upgrade = upgrade_opset(proto, MIN_PER_CHANNEL_OPSET)
    per_channel = (ai_onnx_opset(proto) or MIN_PER_CHANNEL_OPSET) >= MIN_PER_CHANNEL_OPSET
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    initializers = {t.name: t for t in graph.initializer}
    kept_reads = {name for node in graph.node if node.name in keep_float for name in node.input}
    kept_reads |= {i.name for i in graph.input}  # an initializer listed as an input too (IR < 4) stays as it is
    dequantize, count = [], 0  # DequantizeLinear nodes, first in the graph: before every reader
    for node in graph.node:
        position, axis = WEIGHT_INPUTS.get(node.op_type, (None, 0))
        name = node.input[position] if position is not None and len(node.input) > position else ""
        weights = initializers.pop(name, None)  # popped: a weight shared by two nodes is lowered once
        if weights is None or name in kept_reads:
            continue
        array = numpy_helper.to_array(weights)
        if array.dtype != np.float32 or array.ndim < 2:
            continue
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            axis = 0
        axis %= array.ndim
        q, scale = symmetric_int8(array, axis) if per_channel else _per_tensor(array)
        graph.initializer.remove(weights)
        graph.initializer.extend([
            numpy_helper.from_array(q, name + "_int8"), numpy_helper.from_array(scale, name + "_scale"),
            numpy_helper.from_array(np.zeros_like(scale, np.int8), name + "_zero_point"),
        ])
        attrs = {"axis": axis} if per_channel else {}
        dequantize.append(helper.make_node("DequantizeLinear", [name + "_int8", name + "_scale", name + "_zero_point"], [name], name=name + "_dequantize", **attrs))
        count += 1
    nodes = dequantize + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    facts = {"weights": "int8, symmetric, " + ("per channel" if per_channel else "per tensor"), "activations": "float", "int8_weights": count,
             "float_nodes": sorted(keep_float)}
    if moved:
        facts["constants_to_initializers"] = moved
    if upgrade:
        facts["opset_upgraded"] = upgrade
    return out, facts


def _per_tensor(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q, scale = symmetric_int8(array.reshape(1, -1), 0)
    return q.reshape(array.shape), np.asarray(scale[0], np.float32)
