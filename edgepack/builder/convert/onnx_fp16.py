"""fp16 for ONNX (onnxconverter-common), with the range checks a real model needs.

A node stays in fp32 where it reads a weight past float16's range (65504) or, run on the
calibration data, makes or reads an activation past half of it; the nodes kept in fp32 read their
weights in fp32 too (onnxconverter-common 1.16 stores them in fp16 behind a Cast).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgepack.builder.convert.onnx_quant import constants_to_initializers
from edgepack.errors import BuildError, first_line
from edgepack.model.data import Dataset
from edgepack.profile.schema import IoDtype

FP16_MAX = 65504.0


def to_fp16(proto, io_dtype: IoDtype, keep_float: Sequence[str] = ()):
    """Return PROTO with float16 weights and arithmetic, except in the nodes named in KEEP_FLOAT
    and the nodes that read a weight float16 cannot hold (`past_fp16_range`); inputs and outputs
    stay float32 unless IO_DTYPE is float16."""
    import warnings

    from onnxconverter_common import float16

    proto, _ = constants_to_initializers(proto)
    keep_float = list(keep_float) + [n for n in past_fp16_range(proto) if n not in keep_float]
    try:
        with warnings.catch_warnings():  # "the float32 number ... will be truncated": the verification says what it cost
            warnings.simplefilter("ignore", UserWarning)
            half = float16.convert_float_to_float16(
                proto, keep_io_types=io_dtype is not IoDtype.float16, disable_shape_infer=False, node_block_list=list(keep_float) or None
            )
    except Exception as exc:
        raise BuildError(f"fp16 conversion failed: {first_line(exc)}", hint="try build.precision: fp32 or int8") from None
    return float32_weights_for(half, proto, set(keep_float))


def float32_weights_for(half, original, kept: set[str]):
    """Give the nodes KEPT in float their weights in float32 again. onnxconverter-common (1.16)
    keeps such a node's arithmetic in float32 but still stores its weights in float16, clamped
    to +-1e4, behind a Cast: a weight past float16's range is then wrong, and any other loses
    precision. Each such Cast reads an float32 copy of the original weight instead."""
    import onnx

    weights = {t.name: t for t in original.graph.initializer}
    halves = {t.name for t in half.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    casts = {node.output[0]: node for node in half.graph.node if node.op_type == "Cast" and node.input and node.input[0] in halves}
    copied: set[str] = set()
    for node in half.graph.node:
        if node.name not in kept:
            continue
        for name in node.input:
            cast = casts.get(name)
            source = cast.input[0] if cast is not None else None
            if source not in weights:
                continue
            if source not in copied:
                copy = onnx.TensorProto()
                copy.CopyFrom(weights[source])
                copy.name = source + "_fp32"
                half.graph.initializer.append(copy)
                copied.add(source)
            cast.input[0] = source + "_fp32"  # a Cast from float32 to float32: the weight as it was
    unread = halves - {i for node in half.graph.node for i in node.input}
    kept_initializers = [t for t in half.graph.initializer if t.name not in unread]
    del half.graph.initializer[:]
    half.graph.initializer.extend(kept_initializers)
    return half


FP16_HEADROOM = 0.5  # a tensor past half float16's range on the calibration data will pass it on other data


def fp16_with_checks(proto, io_dtype: IoDtype, data: Dataset | None) -> tuple[object, dict]:
    """PROTO in fp16, with in fp32 the nodes that read a weight past float16's range and, run on
    DATA, the nodes that make or read an activation past half of it. Returns (model, what was kept and why).

    The check runs the float model, not the fp16 one: onnxruntime's CPU provider computes many fp16
    ops in fp32, so an overflow that a GPU would meet does not show in a verification on the host."""
    facts: dict = {}
    weights = past_fp16_range(proto)
    over, kept = [], []
    if data is not None and len(data):
        try:
            over, kept = overflowing_nodes(proto, data)
        except Exception as exc:  # the check is a safeguard: without it the verification still judges the model
            facts["overflow_check"] = f"could not run the float model on the data: {first_line(exc)[:200]}"
    if weights:
        facts["fp32_for_weights"] = weights
    if kept:
        facts["fp32_for_activations"] = kept
        facts["activations_past_range"] = over[:8]
    fp32_nodes = weights + [n for n in kept if n not in weights]
    if fp32_nodes:
        facts["fp32_nodes"] = fp32_nodes
    return to_fp16(proto, io_dtype, kept), facts


def overflowing_nodes(fp32, data: Dataset) -> tuple[list[str], list[str]]:
    """(the tensors of FP32 that pass float16's range, with headroom, on DATA; the nodes that make or read them)."""
    from edgepack.builder.streaming import tensor_ranges

    limit = FP16_HEADROOM * FP16_MAX
    over = [t for t, peak in tensor_ranges(fp32, data).items() if peak > limit]
    nodes = [n for n in fp32.graph.node if any(t in over for t in list(n.output) + list(n.input))]
    return over, [n.name for n in nodes if n.name]


def past_fp16_range(proto) -> list[str]:
    """The nodes of PROTO that read a float weight with a value past float16's range (65504),
    which would become infinity: a folded normalisation's running variance, say (1e8 in a real
    text detector's head). Only named nodes: the fp16 converter keeps nodes by name."""
    import onnx
    from onnx import numpy_helper

    proto, _ = constants_to_initializers(proto)
    huge = {t.name for t in proto.graph.initializer
            if t.data_type == onnx.TensorProto.FLOAT and np.abs(numpy_helper.to_array(t)).max(initial=0.0) > FP16_MAX}
    return [n.name for n in proto.graph.node if n.name and huge.intersection(n.input)]
