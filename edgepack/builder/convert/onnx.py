"""Export a model to ONNX at a given precision: fp32, fp16, static int8 (QDQ) or dynamic int8.

An ONNX source is taken as it is (its opset kept); a Keras or SavedModel source is exported with
tf2onnx at `build.onnx.opset`. The artifact is `model.onnx`; the host runs it with onnxruntime's
CPU provider for verification, whatever providers the device will use.
"""

from __future__ import annotations

from importlib import metadata

import numpy as np

from edgepack.builder.convert import Artifact, dequantize, quantize
from edgepack.bundle import TensorSpec
from edgepack.errors import BuildError
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import IoDtype, Precision, Profile

ARTIFACT = "model.onnx"
MIN_QUANT_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (axis) arrived in opset 13


def export_onnx(model: SourceModel, profile: Profile, calibration: Dataset | None) -> Artifact:
    """Convert MODEL to ONNX at the profile's precision; the artifact is `model.onnx`.

    Raises:
        BuildError: int8 without calibration data, or a conversion or quantization that fails.
    """
    from edgepack.builder.convert import onnx_fp16, onnx_quant

    b = profile.build
    proto, facts = fp32_graph(model, b.onnx.opset)
    precision = b.precision
    quant: dict[str, tuple[float, int]] = {}
    if precision is Precision.fp16:
        proto, kept = onnx_fp16.fp16_with_checks(proto, b.io_dtype, calibration)
        facts["fp16"] = {"converter": f"onnxconverter-common {_version('onnxconverter-common')}", "io_dtype": b.io_dtype.value, **kept}
        if not any(p in onnx_quant.GPU_PROVIDERS for p in profile.runtime.providers) and profile.runtime.engine.value != "tensorrt":
            facts["fp16"]["note"] = "onnxruntime's CPU provider has few fp16 kernels: on CPU it casts back to float32"
    elif precision in (Precision.int8, Precision.dynamic_int8):
        if precision is Precision.int8:
            if calibration is None or len(calibration) == 0:
                raise BuildError("static int8 needs calibration data", hint="pass --data, or --synthetic-calibration")
            # quantize_int8 upgrades the opset itself, and quantizes per-tensor where onnx cannot
            proto, facts["onnx_quantization"] = onnx_quant.quantize_int8(proto, profile, calibration)
            if "opset_upgraded" in facts["onnx_quantization"]:
                facts["opset_upgraded"] = facts["onnx_quantization"].pop("opset_upgraded")
            if b.io_dtype in (IoDtype.int8, IoDtype.uint8):
                proto, quant = onnx_quant.strip_edge_quantization(proto, b.io_dtype)
        else:
            proto, facts = _at_least_opset(proto, facts, MIN_QUANT_OPSET)
            proto, facts["onnx_quantization"] = onnx_quant.quantize_dynamic_int8(proto, profile)
    return onnx_artifact(proto, facts, quant)


def onnx_artifact(proto, facts: dict, quant: dict[str, tuple[float, int]] | None = None) -> Artifact:
    """Wrap an ONNX graph as the bundle's `model.onnx`, with its specs and a host runner."""
    content = proto.SerializeToString()
    runner = OnnxArtifactRunner(content, quant or {})
    facts = dict(facts, opset=_opset(proto), ir_version=int(proto.ir_version), nodes=len(proto.graph.node))
    return Artifact({ARTIFACT: content}, ARTIFACT, runner.input_specs, runner.output_specs, runner.predict, facts=facts)


def fp32_graph(model: SourceModel, opset: int):
    """Return (the float32 ONNX graph of MODEL, facts about where it came from)."""
    import onnx

    if model.onnx_model is not None:
        proto = onnx.ModelProto()
        proto.CopyFrom(model.onnx_model)
        return proto, {"source_opset": _opset(proto), "exported_by": None}
    from edgepack.builder.convert.onnx_from_tf import tf_to_onnx

    proto = tf_to_onnx(model, opset)
    return proto, {"source_opset": None, "exported_by": f"tf2onnx {_version('tf2onnx')} from_function at opset {opset}"}


def _at_least_opset(proto, facts: dict, opset: int):
    current = _opset(proto)
    if current is None or current >= opset:
        return proto, facts
    import onnx.version_converter

    try:
        proto = onnx.version_converter.convert_version(proto, opset)
    except Exception as exc:
        raise BuildError(
            f"the model's opset {current} is too old for int8 QDQ (needs {opset}) and onnx cannot convert it: {str(exc).splitlines()[0][:200]}",
            hint=f"re-export it at opset {opset} or newer",
        ) from None
    facts["opset_upgraded"] = f"{current} -> {opset} (per-channel QDQ needs opset {opset})"
    return proto, facts


def _opset(proto) -> int | None:
    from edgepack.model.onnx_graph import ai_onnx_opset

    return ai_onnx_opset(proto)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


class OnnxArtifactRunner:
    """The artifact on the host (onnxruntime, CPU provider): float in and out, quantizing integer edges."""

    def __init__(self, content: bytes, quant: dict[str, tuple[float, int]]):
        from edgepack.model.onnx_graph import ORT_DTYPES, OnnxRunner

        self.runner = OnnxRunner(content, "the ONNX artifact")
        self.quant = quant

        def spec(node) -> TensorSpec:
            scale, zero = quant.get(node.name, (None, None))
            shape = [d if isinstance(d, int) and d > 0 else None for d in node.shape]
            return TensorSpec(name=node.name, shape=shape, dtype=ORT_DTYPES.get(node.type, "float32"), scale=scale, zero_point=zero)

        self.input_specs = [spec(n) for n in self.runner.inputs]
        self.output_specs = [spec(n) for n in self.runner.outputs]

    def predict(self, xs: list[np.ndarray], input_names: list[str], output_names: list[str]) -> list[np.ndarray]:
        if not self.quant:
            return self.runner.predict(xs, input_names, output_names)
        from edgepack.model.onnx_graph import match_names

        ins = [self.input_specs[k] for k in match_names(input_names, self.runner.inputs, "input")]
        outs = [self.output_specs[k] for k in match_names(output_names, self.runner.outputs, "output")]
        ys = self.runner.predict([_quantize(x, s) for x, s in zip(xs, ins)], input_names, output_names)
        return [_dequantize(y, s) for y, s in zip(ys, outs)]


def _quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    return x if spec.scale is None else quantize(x, spec.scale, spec.zero_point, spec.dtype)


def _dequantize(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    return y.astype(np.float32) if spec.scale is None else dequantize(y, spec.scale, spec.zero_point)
