"""Explain and recover ONNX builds (see `edgepack.builder.recover` for the scheme).

Every comparison streams (`edgepack.builder.streaming`): the float and the candidate graph run on
the same few samples at a time and each tensor keeps running sums only, so memory does not grow
with the number of samples or the model's depth.

int8 (QDQ): a tensor's error is the SQNR it lost against the float graph since the tensors it was
computed from. Recovery, cheapest first: keep the few layers that dominate the error in float (with
the activations around them, so that the outlier stays unquantized), percentile calibration,
entropy calibration — all int8 arithmetic — then int8 weights with float activations (int8's size,
fp32's arithmetic), and 16-bit activations x int8 weights (onnxruntime's QDQ with 16-bit Q/DQ ops)
only where that could not be built: with the same weights and coarser activations it cannot do better.

fp16: the export itself keeps in fp32 the nodes that read weights or make or read activations past
float16's range (`onnx_fp16.fp16_with_checks`); where the gate still fails, the worst nodes one at
a time, re-measured after each.
"""

from __future__ import annotations

import hashlib

import numpy as np

from edgepack.builder.recover.common import (
    EXPLAIN_SAMPLES, MAX_FLOAT_LAYERS, WEIGHT_ONLY, WEIGHT_ONLY_MISSED, Attempt, Check, LayerError, Outcome, layers_worth_trying, skip_layers,
    stalled, try_variant, worst_first,
)
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import CalibrationMethod, IoDtype, Precision, Profile

EXPLAIN_IMAGES = 8  # samples enough for per-tensor errors of image-sized tensors (each holds thousands of values)
SIXTEEN_BIT = "16-bit activations x int8 weights"
INT8_FLOAT_LAYERS = 3  # int8 layer fallback: a few layers, or it is not worth its (de)quantize ops
PASSTHROUGH = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "Identity", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"}
_LAST: dict = {}  # the last int8 artifact's errors: recovery reuses what the explanation measured


def explain(model: SourceModel, profile: Profile, calibration: Dataset | None, sample: Dataset, artifact) -> list[LayerError]:
    """Return per-tensor errors of an ONNX int8 or fp16 build, worst first."""
    from edgepack.builder.convert.onnx import fp32_graph

    fp32, _ = fp32_graph(model, profile.build.onnx.opset)
    sample = _explain_sample(sample)
    if profile.build.precision is Precision.int8:
        return _qdq_errors(fp32, profile, _proto(artifact), sample)[0]
    if profile.build.precision is Precision.fp16:
        return _tensor_errors(fp32, _proto(artifact), sample)
    return []


def _explain_sample(sample: Dataset) -> Dataset:
    """Fewer samples where each is large (an image): the errors are sums over every value, not over samples."""
    per_sample = sum(int(np.prod(x.shape[1:])) for x in sample.x)
    return sample.take(np.arange(min(len(sample), EXPLAIN_IMAGES))) if per_sample >= 4096 else sample


def _proto(artifact):
    import onnx

    return onnx.load_from_string(artifact.files[artifact.artifact])


def _qdq_errors(fp32, profile: Profile, quantized, sample: Dataset) -> tuple[list[LayerError], dict[str, list[str]]]:
    """The SQNR (dB) lost between consecutive measured tensors, each measured against the float
    graph from the model's inputs on, and the nodes in between (a fused Gemm + Relu is measured
    only after the Relu). The loss counts those nodes' own quantization and what quantizing their
    inputs cost them — an outlier feature that drowns a whole input tensor shows only there: the
    input's own SQNR stays high while the first layer's output is ruined.

    Returns (errors, output tensor -> the names of the nodes to keep in float for it)."""
    from edgepack.builder.convert.onnx_quant import int8_input
    from edgepack.builder.streaming import compare_graphs

    content = quantized.SerializeToString()
    key = (hashlib.sha256(content).hexdigest(), len(sample), hashlib.sha256(np.ascontiguousarray(sample.x[0][:1]).tobytes()).hexdigest())
    if key in _LAST:
        return _LAST[key]
    pre, _ = int8_input(fp32, profile.build.onnx.per_channel)
    stats = compare_graphs(pre, quantized, sample)
    sqnr = {t: s.sqnr_db for t, s in stats.items() if s.comparable}
    nodes = list(pre.graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    errors, segments = [], {}
    for tensor, value in sqnr.items():
        segment, sources, frontier = set(), [], [tensor]
        while frontier:  # walk back to the nearest measured tensors
            i = producer.get(frontier.pop())
            if i is None or i in segment:
                continue
            segment.add(i)
            for name in nodes[i].input:
                if name in sqnr:
                    sources.append(sqnr[name])
                elif name in producer:
                    frontier.append(name)
        if segment and sources:
            first = nodes[min(segment)]
            errors.append(LayerError(tensor, first.name, first.op_type, max(min(sources) - value, 0.0), "SQNR drop dB", min(segment)))
            segments[tensor] = _float_around(nodes, producer, sorted(segment))
    _LAST.clear()
    _LAST[key] = (errors, segments)
    return errors, segments


def _float_around(nodes, producer: dict[str, int], segment: list[int]) -> list[str]:
    """The nodes to exclude from quantization so that SEGMENT computes from float inputs: the
    segment, the producers of its inputs back through activations and layout ops to the layer that
    computed them, and every reader of those tensors (a tensor stays float only when none of its
    producers and readers is quantized)."""
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            readers.setdefault(name, []).append(i)
    keep, tensors = list(segment), []
    for i in segment:
        frontier = [n for n in nodes[i].input if n in producer]
        while frontier:
            name = frontier.pop()
            tensors.append(name)
            j = producer[name]
            if j not in keep:
                keep.append(j)
            if nodes[j].op_type in PASSTHROUGH:
                frontier += [n for n in nodes[j].input[:1] if n in producer]
    for name in tensors:
        keep += [j for j in readers.get(name, []) if j not in keep]
    return [nodes[j].name for j in sorted(keep) if nodes[j].name]


def _tensor_errors(fp32, candidate, sample: Dataset) -> list[LayerError]:
    from edgepack.builder.streaming import compare_graphs

    producers = {out: (i, node.name, node.op_type) for i, node in enumerate(fp32.graph.node) for out in node.output}
    errors = []
    for tensor, s in compare_graphs(fp32, candidate, sample).items():
        if tensor not in producers or not s.comparable:
            continue
        i, node, op = producers[tensor]
        errors.append(LayerError(tensor, node, op, s.rmse_over_std, "rmse/std", i))
    return errors


def recover(model: SourceModel, profile: Profile, calibration: Dataset | None, evaluation: Dataset, check: Check, outcome: Outcome) -> None:
    """Try the ONNX variants in order of cost; keep the first that meets every budget."""
    from edgepack.builder.convert.onnx import fp32_graph, onnx_artifact
    from edgepack.builder.convert.onnx_fp16 import overflowing_nodes, to_fp16
    from edgepack.builder.convert.onnx_quant import quantize_int8
    from edgepack.builder.convert.onnx_weights import int8_weights

    b = profile.build
    fp32, facts = fp32_graph(model, b.onnx.opset)
    sample = _explain_sample(evaluation.take(np.arange(min(EXPLAIN_SAMPLES, len(evaluation)))))

    def artifact(made):  # a graph, or (an int8 graph, what its quantization was)
        proto, quantization = made if isinstance(made, tuple) else (made, None)
        return onnx_artifact(proto, dict(facts, onnx_quantization=quantization) if quantization else facts)

    def attempt(strategy: str, make, float_layers=()) -> bool:
        return try_variant(outcome, check, strategy, lambda: artifact(make()), float_layers)

    if b.precision is Precision.int8 and calibration is not None:
        if outcome.artifact is None and b.onnx.per_channel:  # the quantizer raised: the per-channel path is the usual culprit
            if attempt("per-tensor weights", lambda: quantize_int8(fp32, _with_onnx(profile, per_channel=False), calibration)):
                return
        if _int8_layers(fp32, profile, calibration, sample, outcome, attempt):
            return
        if b.onnx.calibration_method is not CalibrationMethod.percentile:
            variant = _with_onnx(profile, calibration_method=CalibrationMethod.percentile)
            if attempt("percentile calibration", lambda: quantize_int8(fp32, variant, calibration)):
                return
        if b.onnx.calibration_method is not CalibrationMethod.entropy:
            variant = _with_onnx(profile, calibration_method=CalibrationMethod.entropy)
            if attempt("entropy calibration", lambda: quantize_int8(fp32, variant, calibration)):
                return
        if b.io_dtype is IoDtype.float32:
            if attempt(WEIGHT_ONLY, lambda: int8_weights(fp32)):
                return
            if outcome.attempts[-1].error is None:
                outcome.attempts.append(Attempt(SIXTEEN_BIT, error=WEIGHT_ONLY_MISSED))
                return
        attempt(SIXTEEN_BIT, lambda: quantize_int8(fp32, profile, calibration, wide_activations=True))
    elif b.precision is Precision.fp16:
        # The plain fp16 export already keeps in fp32 what passes float16's range (`fp16_with_checks`);
        # what still misses the gate is precision: the worst node, one at a time, from that graph on.
        if outcome.artifact is not None:
            kept = list((outcome.artifact.facts.get("fp16") or {}).get("fp32_for_activations", []))
            current = _proto(outcome.artifact)
        else:  # the plain export raised: check the ranges here
            _, kept = overflowing_nodes(fp32, calibration if calibration is not None and len(calibration) else sample)
            current = to_fp16(fp32, b.io_dtype, kept)
        for _ in range(MAX_FLOAT_LAYERS):
            candidates = [e for e in worst_first(_tensor_errors(fp32, current, sample)) if e.layer not in kept]
            if not candidates or candidates[0].error == 0:
                return
            kept.append(candidates[0].layer)
            current = to_fp16(fp32, b.io_dtype, kept)
            if attempt(f"fp16 with {len(kept)} node(s) in fp32", lambda c=current: c, list(kept)):
                return


def _int8_layers(fp32, profile: Profile, calibration: Dataset, sample: Dataset, outcome: Outcome, attempt) -> bool:
    """Keep the few layers that dominate the int8 error in float, worst first; whether one variant held."""
    from edgepack.builder.convert.onnx_quant import quantize_int8

    if outcome.artifact is None:  # the plain quantizer raised: no int8 graph to measure layers in
        skip_layers(outcome, "the plain int8 build raised, so there is no graph to measure layers in")
        return False
    errors, segments = _qdq_errors(fp32, profile, _proto(outcome.artifact), sample)
    if not layers_worth_trying(outcome, errors):
        return False
    kept: list[str] = []
    first = len(outcome.attempts)
    for i, error in enumerate(worst_first(errors)[:INT8_FLOAT_LAYERS], 1):
        kept += [name for name in segments[error.tensor] if name not in kept]
        if attempt(f"int8 with {i} layer(s) in float", lambda k=tuple(kept): quantize_int8(fp32, profile, calibration, k), kept):
            return True
        if stalled(outcome.attempts[first:]):
            return False
    return False


def _with_onnx(profile: Profile, **changes) -> Profile:
    onnx = profile.build.onnx.model_copy(update=changes)
    return profile.model_copy(update={"build": profile.build.model_copy(update={"onnx": onnx})})
