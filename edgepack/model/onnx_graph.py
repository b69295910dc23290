"""ONNX models on the host: load and check, read the input/output spec, fix dimensions, run.

Used for ONNX source models (`edgepack.model.source`) and for the ONNX artifacts the builder
makes (`edgepack.builder.convert.onnx`). onnx and onnxruntime are imported inside the functions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np

from edgepack.errors import ModelError, first_line

BATCH = 64  # samples per run where the model's batch dimension is dynamic
# ... fewer where samples are large: a run holds every activation of its samples (a 320x320
# detector: about 60 MB a sample), so a run takes at most this many input values
RUN_VALUES = 1 << 20
# ONNX TensorProto element types edgepack can feed and read (onnx.TensorProto values).
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}
ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def ai_onnx_opset(model) -> Optional[int]:
    """Return the model's opset of the default (ai.onnx) domain."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def read_onnx(path: Path):
    """Load and check an ONNX file; return the ModelProto.

    Raises:
        ModelError: not a readable ONNX model, or one `onnx.checker` rejects.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # DecodeError, OSError, ... for a corrupt or truncated file
        raise ModelError(
            f"{path}: cannot read it as an ONNX model: {first_line(exc)}",
            hint="check that the file is complete (torch.onnx.export / tf2onnx output), not truncated or a Git LFS pointer",
        ) from None
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:
        raise ModelError(
            f"{path}: onnx.checker rejects the model: {first_line(exc)}",
            hint="re-export it from the original framework; onnx.checker.check_model(model) shows the same error",
        ) from None
    if not graph_inputs(model):
        raise ModelError(f"{path}: the ONNX graph has no inputs")
    return model


def graph_inputs(model) -> list:
    """The graph's real inputs (older IR versions also list initializers as inputs)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def value_spec(value) -> tuple[str, tuple[Optional[int], ...], tuple[Optional[str], ...], str]:
    """Return (name, shape with None for a dynamic dimension, dimension names, dtype) of a ValueInfo."""
    t = value.type.tensor_type
    dtype = ONNX_DTYPES.get(t.elem_type)
    if dtype is None:
        raise ModelError(f"ONNX tensor '{value.name}' has element type {t.elem_type}, which edgepack cannot feed or read")
    shape, names = [], []
    for d in t.shape.dim:
        static = d.HasField("dim_value") and d.dim_value > 0
        shape.append(int(d.dim_value) if static else None)
        names.append(None if static else (d.dim_param or "?"))
    return value.name, tuple(shape), tuple(names), dtype


def set_input_shapes(model, shapes: dict[str, tuple[int, ...]]):
    """Return a copy of MODEL whose inputs named in SHAPES have those static dimensions.

    Shapes inside the graph are inferred again; stale intermediate shapes are dropped first so
    a dynamic value_info cannot contradict the new static input.
    """
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in graph_inputs(fixed):
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for d, size in zip(dims, shapes[value.name]):
                d.Clear()
                d.dim_value = int(size)
    del fixed.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(fixed)
    except Exception:  # shape inference is an optimisation here; the runtime checks shapes itself
        return fixed


def ort_reason(exc: BaseException) -> str:
    """ONNX Runtime's message without its C++ source location and signature."""
    text = str(exc).strip()
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    located = re.search(r"\.(?:h|cc|cpp):\d+ [^\n]*?\)\s+(\S.*)", text, re.S)
    if located:
        text = located.group(1)
    return " ".join(text.split())[:400]


def opset_problem(exc: BaseException, model) -> Optional[str]:
    """Explain an ONNX Runtime load failure caused by an opset it does not support, or None."""
    text = str(exc)
    newer = re.search(r"Opset (\d+) is under development", text)
    till = re.search(r"support for domain (\S+) is till opset (\d+)", text)
    if newer or till or "opset" in text.lower() and "not supported" in text.lower():
        import onnxruntime

        opset = newer.group(1) if newer else ai_onnx_opset(model)
        limit = f" (it supports {till.group(1)} up to opset {till.group(2)})" if till else ""
        return f"onnxruntime {onnxruntime.__version__} cannot load opset {opset}{limit}"
    return None


class OnnxRunner:
    """Run an ONNX model with onnxruntime's CPU provider: float inputs in, float outputs out.

    Inputs whose first dimension is fixed (a PyTorch export at batch 1, say) are fed in chunks
    of that size; a dynamic first dimension takes the whole batch at once.
    """

    def __init__(self, model, what: str = "the ONNX model"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initializers are not for the user
        content = model if isinstance(model, bytes) else model.SerializeToString()
        try:
            self.session = ort.InferenceSession(content, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            proto = model
            if isinstance(model, bytes):
                import onnx

                proto = onnx.load_from_string(model)
            reason = opset_problem(exc, proto)
            if reason:
                raise ModelError(
                    f"{what}: {reason}",
                    hint="re-export it with a released opset, e.g. torch.onnx.export(..., opset_version=17), or "
                    "onnx.version_converter.convert_version(model, 17)",
                ) from None
            raise ModelError(f"{what}: onnxruntime cannot load it: {ort_reason(exc)}", hint="check the model with onnx.checker and onnxruntime") from None
        self.inputs = self.session.get_inputs()
        self.outputs = self.session.get_outputs()

    def predict(self, xs: list[np.ndarray], input_names: list[str] | None = None, output_names: list[str] | None = None) -> list[np.ndarray]:
        """Run on XS (one array per input, batch first); return float32 outputs.

        INPUT_NAMES and OUTPUT_NAMES are the caller's names for them: matched by name where they
        all match, by position otherwise (a Keras model's output_0 is the artifact's first output).
        """
        feeds = match_names(input_names, self.inputs, "input")
        fetch = match_names(output_names, self.outputs, "output")
        n = len(xs[0])
        first = self.inputs[feeds[0]].shape[0] if self.inputs[feeds[0]].shape else None
        fixed = isinstance(first, int) and first > 0
        per_sample = sum(int(np.prod(x.shape[1:])) for x in xs) or 1
        step = first if fixed else max(1, min(BATCH, RUN_VALUES // per_sample))
        if fixed and n % step:
            raise ModelError(f"the ONNX model takes batches of {step}, which {n} samples do not fill")
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, step):
            feed = {
                self.inputs[k].name: np.ascontiguousarray(x[start : start + step]).astype(ORT_DTYPES.get(self.inputs[k].type, "float32"), copy=False)
                for k, x in zip(feeds, xs)
            }
            result = self.session.run([self.outputs[k].name for k in fetch], feed)
            chunks.append([np.asarray(r).astype(np.float32, copy=False) if np.asarray(r).dtype.kind == "f" else np.asarray(r) for r in result])
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(fetch))]


def match_names(names: list[str] | None, nodes, what: str) -> list[int]:
    index = {node.name: i for i, node in enumerate(nodes)}
    if names and all(n in index for n in names):
        return [index[n] for n in names]
    count = len(names) if names else len(nodes)
    if count > len(nodes):
        raise ModelError(f"{count} {what}s given to an ONNX model with {len(nodes)}")
    return list(range(count))
