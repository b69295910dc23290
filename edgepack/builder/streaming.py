"""Compare every intermediate tensor of two ONNX graphs in bounded memory.

The graphs run on the same inputs a few samples at a time; for each tensor the comparison keeps
float64 scalars only (sums of squares for SQNR, dot products and norms for cosine, the largest
error and magnitude), and each batch's activations are let go before the next one runs. Memory
is two sessions plus one batch of activations, whatever the number of samples.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from edgepack.model.data import Dataset

BATCH = 1  # samples per run: every activation of two graphs is held per run (a 320x320 detector: about 300 MB a sample)
FLOAT_TYPES = (1, 10)  # TensorProto.FLOAT, FLOAT16
DQ_SUFFIX = "_DequantizeLinear_Output"  # onnxruntime's QDQ quantizer names a dequantized tensor so
SQNR_CAP_DB = 150.0  # about float32's own noise floor; identical tensors measure infinite


@dataclass
class TensorStats:
    """What one tensor of a candidate graph did against the reference's, accumulated over batches."""

    count: int = 0
    ref_sum: float = 0.0
    ref_sq: float = 0.0  # sum of reference**2
    cand_sq: float = 0.0
    dot: float = 0.0
    err_sq: float = 0.0  # sum of (reference - candidate)**2
    max_err: float = 0.0
    ref_max_abs: float = 0.0
    finite: bool = True  # every candidate value was finite
    shape_mismatch: bool = False
    missing: bool = False  # the candidate does not compute it (fused away, renamed)

    def add(self, ref: np.ndarray, cand: Optional[np.ndarray]) -> None:
        r = ref.astype(np.float64, copy=False).ravel()
        self.count += r.size
        self.ref_sum += float(r.sum())
        self.ref_sq += float(r @ r)
        self.ref_max_abs = max(self.ref_max_abs, float(np.abs(r).max(initial=0.0)))
        if cand is None:
            self.missing = True
            return
        if cand.shape != ref.shape:
            self.shape_mismatch = True
            return
        c = cand.astype(np.float64, copy=False).ravel()
        if not np.isfinite(c).all():
            self.finite = False
            return
        d = r - c
        self.cand_sq += float(c @ c)
        self.dot += float(r @ c)
        self.err_sq += float(d @ d)
        self.max_err = max(self.max_err, float(np.abs(d).max(initial=0.0)))

    @property
    def comparable(self) -> bool:
        return self.count > 0 and not (self.missing or self.shape_mismatch)

    @property
    def sqnr_db(self) -> float:
        """10 log10(|ref|^2 / |ref - cand|^2), capped, as onnxruntime's QDQ debugger measures it."""
        if not self.finite:
            return -SQNR_CAP_DB
        if self.err_sq == 0:
            return SQNR_CAP_DB
        return float(np.clip(10 * np.log10(max(self.ref_sq, 1e-300) / self.err_sq), -SQNR_CAP_DB, SQNR_CAP_DB))

    @property
    def cosine(self) -> float:
        norms = np.sqrt(self.ref_sq * self.cand_sq)
        return float(self.dot / norms) if norms > 0 else 1.0

    @property
    def rmse_over_std(self) -> float:
        """The error's RMS over the reference's standard deviation (infinite where the candidate was not finite)."""
        if not self.finite:
            return float("inf")
        n = max(self.count, 1)
        var = max(self.ref_sq / n - (self.ref_sum / n) ** 2, 0.0)
        return float(np.sqrt(self.err_sq / n)) / (float(np.sqrt(var)) or 1.0)


def float_tensors(proto) -> dict[str, int]:
    """Every float (32 or 16 bit) tensor a node of PROTO computes, with its element type."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # an op onnx does not know: fall back to what the graph declares
        inferred = proto
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.output) + list(g.input)}
    produced = [o for node in g.node if node.op_type != "Constant" for o in node.output if o]
    return {name: types[name] for name in produced if types.get(name) in FLOAT_TYPES}


class IntermediateRunner:
    """An onnxruntime session over PROTO that also returns the tensors in NAMES (default: every float
    one); TYPES are the element types to assume where onnx's shape inference does not know an op
    (onnxruntime's com.microsoft QuantizeLinear)."""

    def __init__(self, proto, names: Optional[list[str]] = None, types: Optional[dict[str, int]] = None):
        import onnx
        import onnxruntime as ort
        from onnx import helper

        produced = {o for node in proto.graph.node for o in node.output}
        types = {**{k: v for k, v in (types or {}).items() if k in produced}, **float_tensors(proto)}
        self.types = types
        wanted = [n for n in (names if names is not None else list(types)) if n in types]
        augmented = onnx.ModelProto()
        augmented.CopyFrom(proto)
        existing = {o.name for o in augmented.graph.output}
        augmented.graph.output.extend(helper.make_tensor_value_info(n, types[n], None) for n in wanted if n not in existing)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor as it is named
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = False  # an arena keeps its largest batch's buffers for good
        with tempfile.TemporaryDirectory(prefix="edgepack-stream-") as tmp:
            path = Path(tmp) / "augmented.onnx"  # ONNX Runtime reads it from disk: the augmented graph is not held twice in memory
            onnx.save(augmented, str(path))
            del augmented
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.names = wanted
        fixed = [i.shape[0] for i in self.session.get_inputs() if i.shape and isinstance(i.shape[0], int)]
        self.batch = min(fixed, default=None)  # a graph whose batch is pinned (--input-shape 1x...) takes that many at once

    def run(self, xs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The tensors by name for one batch, the graph's inputs among them."""
        values = self.session.run(None, dict(zip(self.inputs, xs)))
        found = dict(zip(self.outputs, values))
        found.update({n: x for n, x in zip(self.inputs, xs)})
        return found


def batches(data: Dataset, size: int = BATCH) -> Iterator[list[np.ndarray]]:
    """DATA's inputs, SIZE samples at a time."""
    for start in range(0, len(data), size):
        yield [np.ascontiguousarray(x[start : start + size]) for x in data.x]


def compare_graphs(reference, candidate, data: Dataset, size: int = BATCH) -> dict[str, TensorStats]:
    """Per-tensor statistics of CANDIDATE against REFERENCE, for the float tensors both compute and the graph inputs.

    In a QDQ candidate a tensor is compared as its readers see it: after its QuantizeLinear /
    DequantizeLinear pair (the quantizer folds a Relu into that pair, so the tensor before it is
    not the reference's)."""
    ref = IntermediateRunner(reference)
    produced = {o for node in candidate.graph.node for o in node.output}
    alias = {n: n + DQ_SUFFIX for n in ref.names + ref.inputs if n + DQ_SUFFIX in produced}
    wanted = [alias.get(n, n) for n in ref.names] + [alias[n] for n in ref.inputs if n in alias]
    cand = IntermediateRunner(candidate, wanted, {**ref.types, **{a: 1 for a in alias.values()}})
    stats = {name: TensorStats() for name in ref.names + ref.inputs}
    for xs in batches(data, min(size, ref.batch or size, cand.batch or size)):
        want, got = ref.run(xs), cand.run(xs)
        for name, s in stats.items():
            if name in want:
                s.add(want[name], got.get(alias.get(name, name)))
        del want, got
    return stats


def tensor_ranges(proto, data: Dataset, size: int = BATCH) -> dict[str, float]:
    """The largest magnitude each float tensor of PROTO reaches on DATA (non-finite counts as infinite)."""
    runner = IntermediateRunner(proto)
    peak = {name: 0.0 for name in runner.names}
    for xs in batches(data, min(size, runner.batch or size)):
        for name, value in runner.run(xs).items():
            if name in peak and value.size:
                m = float(np.abs(value).max())
                peak[name] = max(peak[name], m if np.isfinite(m) else float("inf"))
    return peak
