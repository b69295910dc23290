"""What the device's accelerator will run, read from the artifact at build time, and the budget on it.

For a target with a TFLite delegate other than XNNPACK, or an ONNX Runtime provider other than the
CPU's, this lists the ops the accelerator takes and refuses:

- TFLite GPU delegate: TensorFlow's `tf.lite.experimental.Analyzer.analyze(gpu_compatibility=True)`,
  whose text flags each refused op ("GPU COMPATIBILITY WARNING: ..."). The analyzer in the
  TensorFlow 2.21 wheel passes every op, Flex ops among them, so edgepack also checks each op
  against the ops the GPU delegate's compatibility check knows (`GPU_DELEGATE_OPS`, from
  tensorflow/lite/tools/versioning/gpu_compatibility.cc): an op in neither is refused. The table
  checks op names, not their shapes or types, so the result is an estimate.
- ONNX Runtime CUDA provider: the partition is made when the provider is loaded, on the device.
  The estimate here follows the provider's rules: nodes that compute shapes (Shape, Size and the
  integer ops fed only by them) are placed on the CPU, and a few op types have no CUDA kernel.
- TensorRT and other providers: only their own parser knows; the build says so and `bench`
  measures the nodes each provider ran.

`budgets.min_accelerated_fraction` fails the build when an estimate falls under it, naming the
refused ops. The stage runs after verification, so a refusal never starts recovery.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Optional

from edgepack.profile.schema import Budgets, Engine, Format, Profile

CPU_DELEGATES = {"xnnpack"}  # runs on the CPU: not an accelerator
CPU_PROVIDERS = {"CPUExecutionProvider"}

# The ops tensorflow/lite/tools/versioning/gpu_compatibility.cc (CheckGpuDelegateCompatibility)
# has a case for; every other builtin op is "Not supported op" there.
GPU_DELEGATE_OPS = frozenset(
    """ADD ADD_N AVERAGE_POOL_2D BATCH_MATMUL CAST CONCATENATION CONV_2D CUMSUM DENSIFY DEPTHWISE_CONV_2D
    DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP DYNAMIC_UPDATE_SLICE FULLY_CONNECTED GATHER HARD_SWISH LSTM
    MAX_POOL_2D MEAN MUL PACK ONE_HOT QUANTIZE RELU_N1_TO_1 PRELU RESHAPE SELECT SELECT_V2 SLICE SOFTMAX
    SPACE_TO_DEPTH SPLIT SPLIT_V STRIDED_SLICE TILE TRANSPOSE TRANSPOSE_CONV RESIZE_BILINEAR
    RESIZE_NEAREST_NEIGHBOR RELU RELU6 LEAKY_RELU REDUCE_MAX REDUCE_MIN REDUCE_PROD SUM PAD PADV2 MIRROR_PAD
    ABS CEIL COS ELU EXP FLOOR GELU LOG LOGISTIC NEG RSQRT SIGN SIN SQRT SQUARE TANH ATAN2 DIV EQUAL
    FLOOR_DIV FLOOR_MOD GREATER GREATER_EQUAL LOGICAL_AND LESS LESS_EQUAL MAXIMUM MINIMUM NOT_EQUAL POW
    SQUARED_DIFFERENCE SUB STABLEHLO_CLAMP
    Convolution2DTransposeBias MaxPoolingWithArgmax2D MaxUnpooling2D Resampler""".split()
)

# Op types the CUDA provider has no kernel for, among those edgepack's builds can contain
# (integer-arithmetic and string ops: a QDQ graph runs Conv in float between DequantizeLinear and
# QuantizeLinear, which the provider does run).
NO_CUDA_KERNEL = frozenset({"ConvInteger", "QLinearConv", "QLinearMatMul", "Unique", "StringNormalizer", "TfIdfVectorizer"})
SHAPE_SOURCES = frozenset({"Shape", "Size"})

OP_LINE = re.compile(r"^\s*Op#(\d+) (\S+)\(")
SUBGRAPH_LINE = re.compile(r"^Subgraph#(\d+) ")
WARNING = "GPU COMPATIBILITY WARNING: "


@dataclass
class Coverage:
    """Which of the artifact's ops one accelerator takes, and how that was found out."""

    accelerator: str  # "gpu" (TFLite delegate) or the ONNX Runtime provider's name
    method: str  # how the figures were read, in words
    estimate: bool  # True unless the accelerator's own tool decided
    total: int = 0
    accelerated: Optional[int] = None  # None: cannot be told before the device
    refused: dict[str, int] = field(default_factory=dict)  # op type -> count
    reasons: dict[str, str] = field(default_factory=dict)  # op type -> why (first reason seen)

    @property
    def fraction(self) -> Optional[float]:
        return None if self.accelerated is None or not self.total else self.accelerated / self.total

    def as_dict(self) -> dict:
        return dict(asdict(self), fraction=self.fraction)


def accelerators(profile: Profile) -> list[str]:
    """Return the accelerators PROFILE's runtime asks for: TFLite delegates and ONNX Runtime providers off the CPU."""
    runtime = profile.runtime
    if profile.build.format is Format.tflite:
        return [d for d in runtime.delegates if d.lower() not in CPU_DELEGATES]
    if profile.build.format is Format.onnx:
        found = [p for p in runtime.providers if p not in CPU_PROVIDERS]
        if runtime.engine is Engine.tensorrt and "TensorrtExecutionProvider" not in found:
            found.insert(0, "TensorrtExecutionProvider")
        return found
    return []


def parse_analyzer(text: str) -> tuple[list[tuple[int, int, str]], dict[tuple[int, int], str]]:
    """Read TFLite's analyzer text: every op as (subgraph, index, name), and each flagged op's warning."""
    ops: list[tuple[int, int, str]] = []
    flagged: dict[tuple[int, int], str] = {}
    subgraph = 0
    for line in text.splitlines():
        if m := SUBGRAPH_LINE.match(line):
            subgraph = int(m.group(1))
        elif m := OP_LINE.match(line):
            ops.append((subgraph, int(m.group(1)), m.group(2)))
            if WARNING in line:  # the warning can follow the op on its own line
                flagged[ops[-1][:2]] = line.split(WARNING, 1)[1].strip()
        elif line.startswith(WARNING) and ops and "has GPU delegate compatibility issues" not in line:
            flagged[ops[-1][:2]] = line[len(WARNING):].strip()
    return ops, flagged


def tflite_gpu_coverage(text: str) -> Coverage:
    """The GPU delegate's coverage from the analyzer's TEXT, with edgepack's table of the delegate's ops beside it."""
    ops, flagged = parse_analyzer(text)
    refused: Counter = Counter()
    reasons: dict[str, str] = {}
    for sg, index, name in ops:
        why = flagged.get((sg, index))
        if why is None and name not in GPU_DELEGATE_OPS:
            why = "not among the GPU delegate's ops (edgepack's table from TFLite's gpu_compatibility.cc)"
        if why is not None:
            refused[name] += 1
            reasons.setdefault(name, why)
    method = "TFLite Analyzer(gpu_compatibility=True) and edgepack's table of the GPU delegate's ops (op names only)"
    return Coverage("gpu", method, True, len(ops), len(ops) - sum(refused.values()), dict(refused), reasons)


def analyze_tflite(content: bytes) -> str:
    """Return TFLite's analyzer report (with the GPU compatibility check) of the model CONTENT."""
    import tensorflow as tf

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):  # the analyzer prints its report
        tf.lite.experimental.Analyzer.analyze(model_content=content, gpu_compatibility=True)
    return buffer.getvalue()


def shape_nodes(graph) -> set[int]:
    """Indices of the nodes of GRAPH that compute shapes: Shape/Size and the nodes fed only by them and constants."""
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    shapes: set[str] = set()
    found: set[int] = set()
    for index, node in enumerate(graph.node):  # ONNX nodes are in topological order
        inputs = [i for i in node.input if i]
        if node.op_type in SHAPE_SOURCES or (inputs and any(i in shapes for i in inputs) and all(i in shapes or i in constants for i in inputs)):
            found.add(index)
            shapes.update(node.output)
    return found


def onnx_coverage(model_bytes: bytes, provider: str) -> Coverage:
    """Estimate which nodes of the ONNX model MODEL_BYTES the PROVIDER takes (see the module's note)."""
    import onnx

    graph = onnx.load_from_string(model_bytes).graph
    nodes = [n for n in graph.node if n.op_type != "Constant"]
    if provider != "CUDAExecutionProvider":
        method = f"{provider} decides its partition when it loads the model on the device: bench measures the nodes it ran"
        return Coverage(provider, method, True, len(nodes))
    on_cpu = shape_nodes(graph)
    refused: Counter = Counter()
    reasons: dict[str, str] = {}
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        why = "computes a shape: ONNX Runtime places it on the CPU" if index in on_cpu else None
        if node.op_type in NO_CUDA_KERNEL:
            why = "no CUDA kernel"
        if why:
            refused[node.op_type] += 1
            reasons.setdefault(node.op_type, why)
    method = "estimate from the graph: shape computations and ops without CUDA kernels go to the CPU"
    return Coverage(provider, method, True, len(nodes), len(nodes) - sum(refused.values()), dict(refused), reasons)


def coverages(profile: Profile, files: dict[str, bytes], artifact: str) -> list[Coverage]:
    """The coverage of each accelerator PROFILE asks for, on the built ARTIFACT (a name in FILES)."""
    found: list[Coverage] = []
    for name in accelerators(profile):
        if profile.build.format is Format.tflite:
            if name.lower() == "gpu":
                found.append(tflite_gpu_coverage(analyze_tflite(files[artifact])))
            else:
                found.append(Coverage(name, f"no build-time check for the {name} delegate: bench measures what it ran", True))
        else:
            found.append(onnx_coverage(files[artifact], name))
    return found


def refused_ops(coverage: Coverage) -> str:
    """Name the ops COVERAGE refuses: 'TOPK_V2 x2 (not supported), SHAPE'."""
    return ", ".join(f"{op}{f' x{n}' if n > 1 else ''} ({coverage.reasons.get(op, '?')})" for op, n in sorted(coverage.refused.items(), key=lambda kv: -kv[1]))


def budget_failures(found: list[Coverage], budgets: Budgets) -> list[str]:
    """The failures of `budgets.min_accelerated_fraction` among FOUND (coverages without a figure are not judged)."""
    least = budgets.min_accelerated_fraction
    failures = []
    for c in found:
        if least is not None and c.fraction is not None and c.fraction < least:
            failures.append(
                f"{c.accelerator} takes {c.fraction:.0%} of the ops ({c.accelerated}/{c.total}"
                f"{', estimated' if c.estimate else ''}), under budgets.min_accelerated_fraction {least:.0%}: refused {refused_ops(c)}"
            )
    return failures


def describe(found: list[Coverage]) -> list[str]:
    """One line per coverage for the build's notes."""
    lines = []
    for c in found:
        if c.fraction is None:
            lines.append(f"{c.accelerator}: {c.method}")
            continue
        refused = f"; refuses {refused_ops(c)}" if c.refused else ""
        lines.append(f"{c.accelerator} takes {c.accelerated}/{c.total} ops ({c.fraction:.0%}{', estimated' if c.estimate else ''}){refused}")
    return lines


def check_accelerator(state) -> None:
    """The plan's accelerator stage: record what the accelerator takes in the manifest; fail the build under the budget."""
    outcome = state.outcome
    artifact = outcome.artifact
    if artifact is None:  # nothing was made: the build has already failed
        return
    found = coverages(state.profile, artifact.files, artifact.artifact)
    artifact.facts["accelerator"] = [c.as_dict() for c in found]
    state.notes.extend(describe(found))
    failures = budget_failures(found, state.profile.budgets)
    if failures and outcome.fidelity is not None:
        outcome.fidelity.failures += failures
        outcome.fidelity.passed = False
