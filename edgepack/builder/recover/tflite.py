"""Explain and recover TFLite builds (see `edgepack.builder.recover` for the scheme).

int8 uses TensorFlow's quantization debugger: it feeds each quantized op the float model's own
inputs, so a layer's error is its own, not the sum of the layers before it; the measure is RMSE
over the quantization step (about 0.29 for plain rounding, much more where a layer's range is
dominated by outliers). Selective quantization goes through the debugger's `denylisted_nodes`
(TensorFlow's own per-node float fallback: no flatbuffer pass; ai-edge-quantizer's regex-scoped
recipes would do the same from a float .tflite). Where no few layers explain the error, int8
weights with float activations come next (`tflite_mixed.int8_weights_except`), then 16-bit
activations with int8 weights, both still about int8's size.
fp16 is compared tensor by tensor against the fp32 artifact.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from edgepack.builder.convert import Artifact
from edgepack.builder.layers import layer_names
from edgepack.builder.recover.common import (
    EXPLAIN_SAMPLES, INT16_ACTIVATIONS, MAX_FLOAT_LAYERS, WEIGHT_ONLY, WEIGHT_ONLY_MISSED, Attempt, Check, LayerError, Outcome, layers_worth_trying,
    record_attempt, short_layer, stalled, try_variant, worst_first,
)
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import IoDtype, Precision, Profile


def explain(model: SourceModel, profile: Profile, calibration: Dataset | None, sample: Dataset, artifact: Artifact) -> list[LayerError]:
    """Return the per-layer errors of a TFLite int8 or fp16 build."""
    if profile.build.precision is Precision.int8 and calibration is not None:
        errors = debugger_errors(_debugger(model, calibration, sample))
    else:
        from edgepack.builder.convert.tflite import convert_tflite

        reference = convert_tflite(model, Precision.fp32, IoDtype.float32, None)
        errors = _tensor_errors(reference, artifact.files[artifact.artifact], sample)
    return _named(errors, model, artifact.files[artifact.artifact])


def recover(model: SourceModel, profile: Profile, calibration: Dataset | None, evaluation: Dataset, check: Check, outcome: Outcome) -> None:
    """Try the TFLite variants for the profile's precision in order of cost; keep the first that passes."""
    if profile.build.precision is Precision.int8 and calibration is not None:
        _recover_int8(model, profile, calibration, evaluation, check, outcome)
    elif profile.build.precision is Precision.fp16:
        _recover_fp16(model, evaluation, check, outcome)


def _named(errors: list[LayerError], model: SourceModel, content: bytes) -> list[LayerError]:
    names = layer_names(content, model)
    for e in errors:
        e.layer = names.get(e.tensor, e.layer)
    return errors


def _debugger(model: SourceModel, calibration: Dataset, sample: Dataset, per_channel: bool = True):
    import tensorflow as tf

    from edgepack.builder.convert.tflite import int8_converter

    converter = int8_converter(model, calibration, per_channel=per_channel, integer_only=False)

    def dataset():
        for i in range(len(sample)):
            yield [x[i : i + 1] for x in sample.x]

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
    debugger.run()
    return debugger


def debugger_errors(debugger) -> list[LayerError]:
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    errors = []
    for order, row in enumerate(csv.DictReader(buf)):
        scale = float(row["scale"] or 0)
        if scale > 0:
            rmse = float(row["mean_squared_error"]) ** 0.5
            errors.append(LayerError(row["tensor_name"], short_layer(row["tensor_name"]), row["op_name"], rmse / scale, "rmse/scale", order))
    return errors


def _tensor_errors(reference: bytes, candidate: bytes, sample: Dataset) -> list[LayerError]:
    """Compare every same-named float tensor of two TFLite models run on the same inputs.

    Sample by sample, each tensor's difference is folded into float64 sums (of the reference, its
    square, the squared error) and the tensors let go: memory is two interpreters, not every
    activation of every sample."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    runners = []
    for content in (reference, candidate):
        # Without the default XNNPACK delegate, every op stays itself and keeps its output tensor.
        it = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        ops = {t: (op["op_name"], op["index"]) for op in it._get_ops_details() for t in op["outputs"]}
        details = {d["name"]: d for d in it.get_tensor_details() if d["index"] in ops}
        runners.append((it, details, {name: ops[d["index"]] for name, d in details.items()}))
    (ref_it, ref_details, _), (cand_it, cand_details, cand_ops) = runners
    shared = sorted(ref_details.keys() & cand_details.keys())
    sums: dict[str, list[float]] = {name: [0.0, 0.0, 0.0, 0.0] for name in shared}  # count, sum, sum of squares, squared error
    for i in range(len(sample)):
        for it in (ref_it, cand_it):
            for d, x in zip(it.get_input_details(), sample.x):
                it.set_tensor(d["index"], x[i : i + 1].astype(d["dtype"]))
            it.invoke()
        for name in shared:
            r = np.asarray(ref_it.get_tensor(ref_details[name]["index"]), dtype=np.float64)
            c = np.asarray(cand_it.get_tensor(cand_details[name]["index"]), dtype=np.float64)
            if r.shape != c.shape:
                sums[name][0] = -np.inf
                continue
            acc = sums[name]
            acc[0] += r.size
            acc[1] += float(r.sum())
            acc[2] += float(np.sum(r**2))
            acc[3] += float(np.sum((r - c) ** 2))
    errors = []
    for name, (count, total, squares, squared_error) in sums.items():
        if count <= 0:
            continue
        spread = float(np.sqrt(max(squares / count - (total / count) ** 2, 0.0))) or 1.0
        err = float(np.sqrt(squared_error / count)) / spread if np.isfinite(squared_error) else float("inf")
        op_name, order = cand_ops[name]
        errors.append(LayerError(name, short_layer(name), op_name, err, "rmse/std", order))
    return errors


def _recover_int8(model, profile: Profile, calibration, evaluation, check: Check, outcome: Outcome) -> None:
    """Cheapest first, within int8's family: per-tensor weights; the few layers that dominate the
    error kept in float; on the CPU, int8 weights with float activations (fp32's speed, int8's
    size); 16-bit activations with int8 weights (reference kernels) only where that is not an
    option or could not be built. The precision ladder comes after."""
    from edgepack.builder.convert.tflite import int8_converter, run_converter, tflite_artifact

    io_dtype = profile.build.io_dtype
    per_tensor = int8_converter(model, calibration, io_dtype, per_channel=False)
    if try_variant(outcome, check, "per-tensor weights", lambda: tflite_artifact(run_converter(per_tensor, Precision.int8))):
        return
    if io_dtype is not IoDtype.float32:
        return  # a float layer or int16 activations would need other input/output types than this profile's
    try:
        if _layers_in_float(model, calibration, evaluation, check, outcome):
            return
    except Exception as exc:  # the debugger raising is a failed attempt; the variants below are still worth a try
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        outcome.attempts.append(record_attempt("layer fallback", None, None, error=message))
    if on_cpu(profile):
        from edgepack.builder.convert.tflite import convert_tflite
        from edgepack.builder.convert.tflite_mixed import int8_weights_except

        def weight_only():
            return tflite_artifact(int8_weights_except(convert_tflite(model, Precision.fp32, IoDtype.float32, None), set()))

        if try_variant(outcome, check, WEIGHT_ONLY, weight_only):
            return
        if outcome.attempts[-1].error is None:
            outcome.attempts.append(Attempt(INT16_ACTIVATIONS, error=WEIGHT_ONLY_MISSED))
            return
    sixteen = int8_converter(model, calibration, io_dtype, activations16=True)
    try_variant(outcome, check, INT16_ACTIVATIONS, lambda: tflite_artifact(run_converter(sixteen, Precision.int8)))


def on_cpu(profile: Profile) -> bool:
    """Whether the profile runs TFLite on the CPU (no delegate, or XNNPACK): there a constant's
    DEQUANTIZE runs once at load; a GPU or NPU delegate may not take int8 weights behind one."""
    return all(d.lower() == "xnnpack" for d in profile.runtime.delegates)


def _layers_in_float(model, calibration, evaluation, check: Check, outcome: Outcome) -> bool:
    """Keep the layers with the largest own error in float, one more at a time; whether one passed."""
    import tensorflow as tf

    from edgepack.builder.convert.tflite import int8_converter, run_converter, tflite_artifact

    sample = evaluation.take(np.arange(min(EXPLAIN_SAMPLES, len(evaluation))))
    debugger = _debugger(model, calibration, sample)
    # Until an attempt passes, outcome.artifact is still the plain build (None if it raised).
    plain = outcome.artifact.files[outcome.artifact.artifact] if outcome.artifact else run_converter(int8_converter(model, calibration), Precision.int8)
    ranked = worst_first(_named(debugger_errors(debugger), model, plain))  # each layer's own error: rank once
    if not layers_worth_trying(outcome, ranked):
        return False
    feeders = input_producers(plain)
    by_tensor = {e.tensor: e for e in ranked}
    denied: list[LayerError] = []
    first = len(outcome.attempts)
    for k, layer in enumerate(ranked[:MAX_FLOAT_LAYERS], 1):
        # A layer kept in float still reads an int8 tensor unless the layer that writes it is
        # float too: where that tensor's range is what loses the information (an outlier channel
        # feeding an output head), the pair is what must stay float.
        for tensor in [layer.tensor] + feeders.get(layer.tensor, []):
            if tensor not in {e.tensor for e in denied}:
                denied.append(by_tensor.get(tensor) or LayerError(tensor, short_layer(tensor), "", 0.0, layer.measure))

        def selective(names=tuple(e.tensor for e in denied)):
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(names))
            return tflite_artifact(debugger.get_nondebug_quantized_model())

        if try_variant(outcome, check, f"int8 with {k} layer(s) in float", selective, [e.layer for e in denied]):
            return True
        if stalled(outcome.attempts[first:]):
            return False
    return False


def input_producers(content: bytes) -> dict[str, list[str]]:
    """Map each op's output tensor in a TFLite model to the compute ops that write its inputs
    (through QUANTIZE and DEQUANTIZE); graph inputs and constants have none."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    names = {d["index"]: d["name"] for d in it.get_tensor_details()}
    ops = it._get_ops_details()
    made_by = {t: op for op in ops for t in op["outputs"]}

    def writer(index: int, depth: int = 0) -> str | None:
        op = made_by.get(index)
        if op is None or depth > 4:
            return None
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            return writer(op["inputs"][0], depth + 1)
        return names[op["outputs"][0]]

    feeders = {}
    for op in ops:
        if len(op["outputs"]) and op["op_name"] not in ("QUANTIZE", "DEQUANTIZE"):
            found = [writer(i) for i in op["inputs"] if i >= 0]
            feeders[names[op["outputs"][0]]] = [f for f in dict.fromkeys(found) if f]
    return feeders


def _recover_fp16(model, evaluation, check: Check, outcome: Outcome) -> None:
    """Keep layers in fp32 one at a time, re-measuring after each: fp16 errors (an overflow above
    all) spread to every later layer, so the earliest of the worst is the one to keep."""
    from edgepack.builder.convert.tflite import convert_tflite, tflite_artifact
    from edgepack.builder.convert.tflite_mixed import fp16_except

    fp32 = convert_tflite(model, Precision.fp32, IoDtype.float32, None)
    sample = evaluation.take(np.arange(min(EXPLAIN_SAMPLES, len(evaluation))))
    kept: list[LayerError] = []
    current = fp16_except(fp32, set())
    for _ in range(MAX_FLOAT_LAYERS):
        errors = _named(_tensor_errors(fp32, current, sample), model, current)
        candidates = [e for e in worst_first(errors) if e.tensor not in {k.tensor for k in kept}]
        if not candidates or candidates[0].error == 0:
            return
        kept.append(candidates[0])
        current = fp16_except(fp32, {k.tensor for k in kept})
        if try_variant(outcome, check, f"fp16 with {len(kept)} layer(s) in fp32", lambda c=current: tflite_artifact(c), [k.layer for k in kept]):
            return
