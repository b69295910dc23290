"""Explain and recover TFLite builds (see `edgepack.builder.recover` for the scheme).

int8 uses TensorFlow's quantization debugger: it feeds each quantized op the float model's own
inputs, so a layer's error is its own, not the sum of the layers before it; the measure is RMSE
over the quantization step (about 0.29 for plain rounding, much more where a layer's range is
dominated by outliers). Selective quantization goes through the debugger's `denylisted_nodes`.
fp16 is compared tensor by tensor against the fp32 artifact.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from edgepack.builder.convert import Artifact
from edgepack.builder.layers import layer_names
from edgepack.builder.recover.common import (
    EXPLAIN_SAMPLES, MAX_FLOAT_LAYERS, Check, LayerError, Outcome, layers_worth_trying, short_layer, stalled, try_variant, worst_first,
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
    """Compare every same-named float tensor of two TFLite models run on the same inputs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    runs = []
    for content in (reference, candidate):
        # Without the default XNNPACK delegate, every op stays itself and keeps its output tensor.
        it = Interpreter(
            model_content=content,
            experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        it.allocate_tensors()
        ops = {t: (op["op_name"], op["index"]) for op in it._get_ops_details() for t in op["outputs"]}
        details = {d["name"]: d for d in it.get_tensor_details() if d["index"] in ops}
        values: dict[str, list[np.ndarray]] = {name: [] for name in details}
        inputs = it.get_input_details()
        for i in range(len(sample)):
            for d, x in zip(inputs, sample.x):
                it.set_tensor(d["index"], x[i : i + 1].astype(d["dtype"]))
            it.invoke()
            for name, d in details.items():
                values[name].append(np.array(it.get_tensor(d["index"]), dtype=np.float64))
        runs.append((values, {name: ops[d["index"]] for name, d in details.items()}))
    (ref, _), (cand, cand_ops) = runs
    errors = []
    for name in ref.keys() & cand.keys():
        r, c = (np.concatenate([np.ravel(v) for v in values]) for values in (ref[name], cand[name]))
        if r.shape != c.shape:
            continue
        spread = float(np.std(r)) or 1.0
        err = float(np.sqrt(np.mean((r - c) ** 2))) / spread if np.all(np.isfinite(c)) else float("inf")
        op_name, order = cand_ops[name]
        errors.append(LayerError(name, short_layer(name), op_name, err, "rmse/std", order))
    return errors


def _recover_int8(model, profile: Profile, calibration, evaluation, check: Check, outcome: Outcome) -> None:
    from edgepack.builder.convert.tflite import int8_converter, run_converter, tflite_artifact

    io_dtype = profile.build.io_dtype
    per_tensor = int8_converter(model, calibration, io_dtype, per_channel=False)
    if try_variant(outcome, check, "per-tensor weights", lambda: tflite_artifact(run_converter(per_tensor, Precision.int8))):
        return
    if io_dtype is not IoDtype.float32:
        return  # a float layer would need float input/output, which this profile rules out
    import tensorflow as tf

    sample = evaluation.take(np.arange(min(EXPLAIN_SAMPLES, len(evaluation))))
    debugger = _debugger(model, calibration, sample)
    # Until an attempt passes, outcome.artifact is still the plain build (None if it raised).
    plain = outcome.artifact.files[outcome.artifact.artifact] if outcome.artifact else run_converter(int8_converter(model, calibration), Precision.int8)
    ranked = worst_first(_named(debugger_errors(debugger), model, plain))  # each layer's own error: rank once
    if not layers_worth_trying(outcome, ranked):
        return
    denied: list[LayerError] = []
    first = len(outcome.attempts)
    for layer in ranked[:MAX_FLOAT_LAYERS]:
        denied.append(layer)

        def selective(names=tuple(e.tensor for e in denied)):
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(names))
            return tflite_artifact(debugger.get_nondebug_quantized_model())

        if try_variant(outcome, check, f"int8 with {len(denied)} layer(s) in float", selective, [e.layer for e in denied]):
            return
        if stalled(outcome.attempts[first:]):
            return


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
