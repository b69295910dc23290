"""Lower an fp32 ONNX model: static int8 in QDQ format and dynamic int8 (onnxruntime.quantization);
fp16 is `onnx_fp16`.

Static int8 runs `quant_pre_process` (shape inference, including the symbolic one that needs
sympy, and graph optimisation) and then `quantize_static` fed by the calibration data through a
`CalibrationDataReader`; entropy and percentile calibration, whose onnxruntime calibrators hold
every activation of every sample, run a batch at a time in `onnx_calibration` and reach
`quantize_static` as a calibration cache.
Before that, weights written as `Constant` nodes (as some exporters do) become initializers, so that
they are quantized, and an opset older than 13 is upgraded for per-channel QDQ (per-tensor weights
where onnx cannot convert it). onnxruntime's tools write scratch files into the working
directory (symbolic shape inference that gives up); they run inside the build's temporary one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from edgepack.errors import BuildError, first_line
from edgepack.model.data import Dataset
from edgepack.model.onnx_graph import ai_onnx_opset, graph_inputs
from edgepack.profile.schema import CalibrationMethod, Engine, IoDtype, OnnxBuild, Profile, QuantType

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CALIBRATION_BATCH = 16  # samples per calibration run where the batch dimension is dynamic
CALIBRATION_VALUES = 1 << 18  # ... and at most about this many input values per run (one 320x320 image: each run holds every activation of its batch)
# Dynamic quantization pays where weights dominate: MatMul/attention/recurrent graphs. Conv is left
# in float: ConvInteger has uint8-only CPU kernels and is slower than the float Conv it replaces.
HISTOGRAM_METHODS = (CalibrationMethod.entropy, CalibrationMethod.percentile)  # calibrated by `onnx_calibration`
DYNAMIC_OPS = ["MatMul", "Attention", "LSTM", "Gather", "EmbedLayerNormalization"]


def int8_types(profile: Profile) -> tuple[QuantType, QuantType, bool, str]:
    """Choose (activation type, weight type, symmetric activations, why) for static int8."""
    q: OnnxBuild = profile.build.onnx
    gpu = profile.runtime.engine is Engine.tensorrt or any(p in GPU_PROVIDERS for p in profile.runtime.providers)
    io = profile.build.io_dtype
    if q.activation_type is not QuantType.auto:
        activation, why = q.activation_type, "build.onnx.activation_type"
    elif io in (IoDtype.int8, IoDtype.uint8):
        activation, why = QuantType(io.value), "follows build.io_dtype"
    elif gpu:
        # TensorRT's explicit quantization takes int8 with zero point 0 only; CUDA kernels likewise.
        activation, why = QuantType.int8, "symmetric int8: TensorRT/CUDA take zero-point-0 int8 only"
    else:
        # CPU: onnxruntime's int8 kernels (MLAS) multiply unsigned activations by signed weights
        # (VPMADDUBSW / VNNI VPDPBUSD on x86, UDOT-based kernels on Arm64), and an asymmetric uint8
        # activation spends all 256 levels on a post-ReLU range [0, max] where symmetric int8 wastes half.
        activation, why = QuantType.uint8, "uint8 activations x int8 weights: the CPU kernels' native pairing"
    if io in (IoDtype.int8, IoDtype.uint8) and activation.value != io.value:
        raise BuildError(
            f"build.io_dtype {io.value} needs {io.value} activations, but build.onnx.activation_type is {activation.value}",
            hint=f"set build.onnx.activation_type: {io.value} (or auto)",
        )
    symmetric = activation is QuantType.int8 and (gpu or q.activation_type is QuantType.auto)
    return activation, q.weight_type, symmetric, why


def quantize_int8(proto, profile: Profile, calibration: Dataset, keep_float: Sequence[str] = (), wide_activations: bool = False) -> tuple[object, dict]:
    """Static int8 in QDQ format, calibrated on CALIBRATION, leaving the nodes named in KEEP_FLOAT
    (names after `preprocess`) in float; return (model, facts). WIDE_ACTIVATIONS: 16-bit activations
    x int8 weights (onnxruntime's QDQ with 16-bit Q/DQ, com.microsoft ops below opset 21)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod as OrtMethod, QuantFormat, QuantType as OrtType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from edgepack.builder.convert.onnx_calibration import histogram_ranges

    q = profile.build.onnx
    activation, weight, symmetric, why = int8_types(profile)
    ort_type = {QuantType.int8: OrtType.QInt8, QuantType.uint8: OrtType.QUInt8}
    method = {CalibrationMethod.minmax: OrtMethod.MinMax, CalibrationMethod.entropy: OrtMethod.Entropy, CalibrationMethod.percentile: OrtMethod.Percentile}
    names = [i.name for i in graph_inputs(proto)]
    fixed = _fixed_batch(proto)
    n = len(calibration)
    if fixed and n < fixed:
        raise BuildError(f"the model takes batches of {fixed}, more than the {n} calibration samples", hint="give more data")
    # Batches of one size: the histogram calibrators (entropy, percentile) cannot stack ragged ones.
    # A fixed batch leaves the remainder out; a dynamic one takes the largest size that divides N.
    # Large samples (images) go a few at a time: each run holds every activation of its batch.
    per_sample = sum(int(np.prod(x.shape[1:])) for x in calibration.x) or 1
    cap = max(1, min(CALIBRATION_BATCH, CALIBRATION_VALUES // per_sample))
    step = fixed or max(d for d in range(1, min(cap, n) + 1) if n % d == 0)
    chunks = [slice(i, i + step) for i in range(0, n - n % step, step)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds: Iterator[dict] = iter(())
            self.rewind()

        def get_next(self):
            return next(self.feeds, None)

        def rewind(self):
            self.feeds = (({name: np.ascontiguousarray(x[s]) for name, x in zip(names, calibration.x)}) for s in chunks)

    pre_proto, prepared = int8_input(proto, q.per_channel)
    per_channel = prepared.pop("per_channel")
    activation_ort = ort_type[activation]
    if wide_activations:
        activation_ort = OrtType.QInt16 if activation is QuantType.int8 else OrtType.QUInt16
    facts = {"activation_type": f"{activation.value[:-1]}16" if wide_activations else activation.value, "weight_type": weight.value,
             "activation_symmetric": symmetric, "per_channel": per_channel, "reduce_range": q.reduce_range,
             "calibration_method": q.calibration_method.value, "quant_format": "QDQ", "why_types": why, "float_nodes": list(keep_float), **prepared}
    with tempfile.TemporaryDirectory(prefix="edgepack-onnx-") as tmp, working_directory(tmp):
        pre, out, cache = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx", Path(tmp) / "calibration.json"
        _save(pre_proto, pre)
        del pre_proto
        try:
            if q.calibration_method in HISTOGRAM_METHODS:
                # onnxruntime's histogram calibrators hold every activation of every sample: the
                # same ranges in bounded memory, handed over as a calibration cache.
                ranges = histogram_ranges(pre, method[q.calibration_method], lambda: iter(Reader()), Path(tmp) / "augmented.onnx")
                save_tensors_data(ranges, cache)
                del ranges
            quantize_static(
                str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel, nodes_to_exclude=list(keep_float),
                reduce_range=q.reduce_range, activation_type=activation_ort, weight_type=ort_type[weight],
                calibrate_method=method[q.calibration_method], calibration_cache_path=str(cache) if cache.exists() else None,
                extra_options={
                    "ActivationSymmetric": symmetric,
                    "WeightSymmetric": weight is QuantType.int8,
                    # Integer inputs need a QuantizeLinear right at the input, even where the first op
                    # is a layout op (Reshape, Transpose) that is otherwise left in float.
                    "ForceQuantizeNoInputCheck": profile.build.io_dtype in (IoDtype.int8, IoDtype.uint8),
                    # 16-bit Q/DQ before opset 21: onnxruntime's com.microsoft ops, rather than an opset bump.
                    "UseQDQContribOps": wide_activations,
                },
            )
        except Exception as exc:
            raise BuildError(
                f"int8 quantization (QDQ) failed: {first_line(exc)}",
                hint="try build.onnx.calibration_method: minmax, or build.precision: fp16 / dynamic-int8",
            ) from None
        import onnx

        model = onnx.load(str(out))
    return model, facts


def int8_input(proto, per_channel: bool) -> tuple[object, dict]:
    """The graph the int8 quantizer reads: `Constant` weights as initializers, opset 13 or newer for
    per-channel weights, `quant_pre_process` run. Returns (model, facts, with the per_channel used)."""
    facts: dict = {}
    proto, moved = constants_to_initializers(proto)
    if moved:
        facts["constants_to_initializers"] = moved
    if per_channel:
        proto, upgrade = upgrade_opset(proto, MIN_PER_CHANNEL_OPSET)
        if upgrade:
            facts["opset_upgraded"] = upgrade
        if (ai_onnx_opset(proto) or MIN_PER_CHANNEL_OPSET) < MIN_PER_CHANNEL_OPSET:
            per_channel = False
            facts["per_channel_note"] = f"per-tensor weights: per-channel QDQ needs opset {MIN_PER_CHANNEL_OPSET} and onnx could not convert the model"
    proto, facts["pre_process"] = preprocess(proto)
    facts["per_channel"] = per_channel
    return proto, facts


MIN_PER_CHANNEL_OPSET = 13  # QuantizeLinear/DequantizeLinear's axis (per-channel) arrived in opset 13


def upgrade_opset(proto, opset: int) -> tuple[object, str | None]:
    """PROTO at OPSET or newer where onnx can convert it; returns (model, what changed or None)."""
    current = ai_onnx_opset(proto)
    if current is None or current >= opset:
        return proto, None
    import onnx.version_converter

    try:
        return onnx.version_converter.convert_version(proto, opset), f"{current} -> {opset} (per-channel QDQ needs opset {opset})"
    except Exception:
        return proto, None


def constants_to_initializers(proto) -> tuple[object, int]:
    """Move the tensors of `Constant` nodes into initializers, so that the quantizer sees them as
    weights; returns (model, how many moved). Scalars and integer constants move too: harmless."""
    from onnx import numpy_helper

    graph = proto.graph
    moved = [n for n in graph.node if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value"]
    if not moved:
        return proto, 0
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0])
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return out, len(moved)


@contextlib.contextmanager
def working_directory(path):
    """Run the block with PATH as the working directory (onnxruntime's tools write scratch files there)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def preprocess(proto) -> tuple[object, str]:
    """Run `quant_pre_process` (shape inference and graph optimisation) on PROTO; return (model, what ran)."""
    import onnx
    from onnxruntime.quantization import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgepack-onnx-") as tmp, working_directory(tmp):
        src, pre = Path(tmp) / "model.onnx", Path(tmp) / "pre.onnx"
        _save(proto, src)
        try:
            quant_pre_process(str(src), str(pre))
            how = "quant_pre_process: symbolic + ONNX shape inference, graph optimisation"
        except Exception as exc:  # symbolic shape inference gives up on some graphs; the ONNX one still helps
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            how = f"quant_pre_process without symbolic shape inference ({first_line(exc)[:120]})"
        return onnx.load(str(pre)), how


def quantize_dynamic_int8(proto, profile: Profile) -> tuple[object, dict]:
    """Dynamic int8: int8 weights for MatMul-like ops, activations quantized at run time; return (model, facts)."""
    from onnxruntime.quantization import QuantType as OrtType
    from onnxruntime.quantization import quantize_dynamic

    q = profile.build.onnx
    weight = {QuantType.int8: OrtType.QInt8, QuantType.uint8: OrtType.QUInt8}[q.weight_type]
    ops = [n.op_type for n in proto.graph.node]
    facts = {"weight_type": q.weight_type.value, "per_channel": q.per_channel, "quantized_op_types": DYNAMIC_OPS}
    if ops.count("Conv") > ops.count("MatMul") + ops.count("Gemm"):
        facts["advice"] = "a convolutional graph: dynamic int8 leaves Conv in float; precision int8 (static QDQ) is usually faster"
    with tempfile.TemporaryDirectory(prefix="edgepack-onnx-") as tmp, working_directory(tmp):
        src, out = Path(tmp) / "model.onnx", Path(tmp) / "dynamic.onnx"
        _save(proto, src)
        try:
            quantize_dynamic(str(src), str(out), op_types_to_quantize=DYNAMIC_OPS, per_channel=q.per_channel,
                             reduce_range=q.reduce_range, weight_type=weight)
        except Exception as exc:
            raise BuildError(f"dynamic int8 quantization failed: {first_line(exc)}", hint="try build.precision: fp16 or int8") from None
        import onnx

        model = onnx.load(str(out))
    return model, facts


def strip_edge_quantization(model, io_dtype: IoDtype):
    """Make an int8 QDQ model take and return integers: drop the QuantizeLinear after each input and
    the DequantizeLinear before each output. Returns (model, {tensor name: (scale, zero point)}).

    Raises:
        BuildError: an input or output that the quantizer left in float.
    """
    from onnx import numpy_helper

    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    elem = 3 if io_dtype is IoDtype.int8 else 2
    params: dict[str, tuple[float, int]] = {}
    remove = []
    for value in graph_inputs(model):
        users = [n for n in graph.node if value.name in n.input]
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            raise BuildError(f"input '{value.name}' is not quantized by the int8 model", hint="set build.io_dtype: float32")
        ql = users[0]
        params[value.name] = (float(consts[ql.input[1]]), int(consts[ql.input[2]]) if len(ql.input) > 2 else 0)
        for node in graph.node:
            node.input[:] = [value.name if i == ql.output[0] else i for i in node.input]
        remove.append(ql)
        value.type.tensor_type.elem_type = elem
    for value in graph.output:
        dq = next((n for n in graph.node if value.name in n.output), None)
        if dq is None or dq.op_type != "DequantizeLinear" or any(value.name in n.input for n in graph.node):
            raise BuildError(f"output '{value.name}' is not quantized by the int8 model (its last op runs in float)", hint="set build.io_dtype: float32")
        params[value.name] = (float(consts[dq.input[1]]), int(consts[dq.input[2]]) if len(dq.input) > 2 else 0)
        producer = dq.input[0]
        for node in graph.node:
            node.output[:] = [value.name if o == producer else o for o in node.output]
            node.input[:] = [value.name if i == producer else i for i in node.input]
        remove.append(dq)
        value.type.tensor_type.elem_type = elem
    for node in remove:
        graph.node.remove(node)
    del graph.value_info[:]
    return model, params


def _fixed_batch(proto) -> int | None:
    dims = graph_inputs(proto)[0].type.tensor_type.shape.dim
    return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


def _save(proto, path: Path) -> None:
    import onnx

    onnx.save(proto, str(path))
