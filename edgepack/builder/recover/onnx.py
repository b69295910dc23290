"""Explain and recover ONNX builds (see `edgepack.builder.recover` for the scheme).

int8 (QDQ): onnxruntime's QDQ debugging helpers collect every activation of the float and the
quantized graph on the same inputs; a tensor's own error is the noise its QuantizeLinear /
DequantizeLinear pair adds (noise over signal, the inverse of its SQNR). Recovery tries the
other calibration methods and per-tensor weights, then keeps the noisiest tensors in float by
excluding the nodes that read them (`nodes_to_exclude`), one at a time.

fp16: each intermediate tensor of the fp16 graph is compared with the fp32 graph's; recovery
keeps nodes in fp32 through onnxconverter-common's `node_block_list`, re-measuring after each,
as an overflow spreads to every later tensor.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgepack.builder.recover.common import (
    EXPLAIN_SAMPLES, MAX_FLOAT_LAYERS, Check, LayerError, Outcome, layers_worth_trying, skip_layers, stalled, try_variant, worst_first,
)
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import CalibrationMethod, Precision, Profile

SQNR_CAP_DB = 150.0  # about float32's own noise floor; identical tensors measure infinite


def explain(model: SourceModel, profile: Profile, calibration: Dataset | None, sample: Dataset, artifact) -> list[LayerError]:
    """Return per-tensor errors of an ONNX int8 or fp16 build, worst first."""
    from edgepack.builder.convert.onnx import fp32_graph

    fp32, _ = fp32_graph(model, profile.build.onnx.opset)
    if profile.build.precision is Precision.int8:
        from edgepack.builder.convert.onnx_quant import preprocess

        pre, _ = preprocess(fp32)
        return _qdq_errors(pre, _proto(artifact), sample)[0]
    if profile.build.precision is Precision.fp16:
        return _tensor_errors(fp32, _proto(artifact), sample)
    return []


def _proto(artifact):
    import onnx

    return onnx.load_from_string(artifact.files[artifact.artifact])


def _activations(proto, sample: Dataset) -> dict[str, np.ndarray]:
    """Every intermediate tensor of PROTO on SAMPLE (one sample per run), by name."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    names = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{n: x[i : i + 1] for n, x in zip(names, sample.x)} for i in range(len(sample))])

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="edgepack-explain-") as tmp:
        src, augmented = Path(tmp) / "model.onnx", Path(tmp) / "augmented.onnx"
        src.write_bytes(proto.SerializeToString())
        modify_model_output_intermediate_tensors(str(src), str(augmented))
        collected = collect_activations(str(augmented), Reader(), execution_providers=["CPUExecutionProvider"])
    activations = {name: np.concatenate([np.asarray(v, dtype=np.float64) for v in values]) for name, values in collected.items()}
    # The graph inputs are no node's output, yet quantizing them can be what hurts (an outlier feature).
    activations.update({n: x.astype(np.float64) for n, x in zip(names, sample.x)})
    return activations


def _qdq_errors(pre, quantized, sample: Dataset) -> tuple[list[LayerError], dict[str, list[str]]]:
    """The SQNR (dB) lost between consecutive measured tensors, each measured against the float
    graph from the model's inputs on, and the nodes in between (a fused Gemm + Relu is measured
    only after the Relu). The loss counts those nodes' own quantization and what quantizing their
    inputs cost them — an outlier feature that drowns a whole input tensor shows only there: the
    input's own SQNR stays high while the first layer's output is ruined.

    Returns (errors, output tensor -> the names of the nodes that produced it since the last measurement)."""
    from onnxruntime.quantization.qdq_loss_debug import compute_activation_error, create_activation_matching

    matched = create_activation_matching(
        {k: [v] for k, v in _activations(quantized, sample).items()}, {k: [v] for k, v in _activations(pre, sample).items()}
    )
    # A tensor the float graph lacks (a node the quantizer added or renamed) cannot be compared.
    matched = {t: m for t, m in matched.items() if "float" in m and "pre_qdq" in m}
    sqnr = {t: float(np.clip(e["xmodel_err"], -SQNR_CAP_DB, SQNR_CAP_DB)) for t, e in compute_activation_error(matched).items()}
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
            segments[tensor] = [nodes[i].name for i in sorted(segment)]
    return errors, segments


def _tensor_errors(fp32, candidate, sample: Dataset) -> list[LayerError]:
    reference, got = _activations(fp32, sample), _activations(candidate, sample)
    producers = {out: (i, node.name, node.op_type) for i, node in enumerate(fp32.graph.node) for out in node.output}
    errors = []
    for tensor, r in reference.items():
        c = got.get(tensor)
        if c is None or c.shape != r.shape or tensor not in producers:
            continue
        spread = float(np.std(r)) or 1.0
        err = float(np.sqrt(np.mean((r - c) ** 2))) / spread if np.all(np.isfinite(c)) else float("inf")
        i, node, op = producers[tensor]
        errors.append(LayerError(tensor, node, op, err, "rmse/std", i))
    return errors


def recover(model: SourceModel, profile: Profile, calibration: Dataset | None, evaluation: Dataset, check: Check, outcome: Outcome) -> None:
    """Try the ONNX variants in order of cost; keep the first that meets every budget."""
    from edgepack.builder.convert.onnx import fp32_graph, onnx_artifact
    from edgepack.builder.convert.onnx_quant import preprocess, quantize_int8, to_fp16

    b = profile.build
    fp32, facts = fp32_graph(model, b.onnx.opset)
    sample = evaluation.take(np.arange(min(EXPLAIN_SAMPLES, len(evaluation))))

    def attempt(strategy: str, make, float_layers=()) -> bool:
        return try_variant(outcome, check, strategy, lambda: onnx_artifact(make(), facts), float_layers)

    if b.precision is Precision.int8 and calibration is not None:
        for method in [m for m in CalibrationMethod if m is not b.onnx.calibration_method]:
            variant = _with_onnx(profile, calibration_method=method)
            if attempt(f"{method.value} calibration", lambda v=variant: quantize_int8(fp32, v, calibration)[0]):
                return
        per_tensor = _with_onnx(profile, per_channel=not b.onnx.per_channel)
        label = "per-tensor weights" if b.onnx.per_channel else "per-channel weights"
        if attempt(label, lambda: quantize_int8(fp32, per_tensor, calibration)[0]):
            return
        if outcome.artifact is None:  # the plain quantizer raised: no int8 graph to measure layers in
            skip_layers(outcome, "the plain int8 build raised, so there is no graph to measure layers in")
            return
        pre, _ = preprocess(fp32)
        errors, segments = _qdq_errors(pre, _proto(outcome.artifact), sample)
        if not layers_worth_trying(outcome, errors):
            return
        kept: list[str] = []
        first = len(outcome.attempts)
        for i, error in enumerate(worst_first(errors)[:MAX_FLOAT_LAYERS], 1):
            kept += [name for name in segments[error.tensor] if name not in kept]
            if attempt(f"int8 with {i} layer(s) in float", lambda k=tuple(kept): quantize_int8(fp32, profile, calibration, k)[0], kept):
                return
            if stalled(outcome.attempts[first:]):
                return
    elif b.precision is Precision.fp16:
        kept = []
        current = to_fp16(fp32, b.io_dtype)
        for _ in range(MAX_FLOAT_LAYERS):
            candidates = [e for e in worst_first(_tensor_errors(fp32, current, sample)) if e.layer not in kept]
            if not candidates or candidates[0].error == 0:
                return
            kept.append(candidates[0].layer)
            current = to_fp16(fp32, b.io_dtype, kept)
            if attempt(f"fp16 with {len(kept)} node(s) in fp32", lambda c=current: c, list(kept)):
                return


def _with_onnx(profile: Profile, **changes) -> Profile:
    onnx = profile.build.onnx.model_copy(update=changes)
    return profile.model_copy(update={"build": profile.build.model_copy(update={"onnx": onnx})})
