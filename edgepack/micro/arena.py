"""The tensor arena: planned from the flatbuffer's tensor lifetimes the way TFLite Micro plans it.

TFLite Micro puts every non-constant tensor in one static buffer, the tensor arena. Its
`GreedyMemoryPlanner` places the buffers largest first, each at the lowest offset where it does
not overlap, in memory and in time, a buffer already placed; the arena's "head" is the highest
end offset. Behind the head the allocator keeps persistent data (tensor and node structs,
kernels' per-channel quantization data). This module repeats that plan without running
anything; `edgepack.micro.host` measures the real figure where TFLite Micro is installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from edgepack.micro.graph import Graph

ALIGNMENT = 16  # TFLite Micro aligns every arena buffer to 16 bytes (MicroArenaBufferAlignment)
MARGIN = 0.10  # stated margin on an estimated arena: kernel scratch buffers, allocator padding

# Persistent bytes TFLite Micro keeps per tensor, per operator, per graph input/output and per
# output channel of a per-channel quantized kernel, as measured by its recording allocator on a
# 64-bit host; on a 32-bit core the structs are smaller, so these are upper bounds there.
PER_TENSOR = 24  # TfLiteEvalTensor
PER_OPERATOR = 64 + 96  # NodeAndRegistration + the kernel's op data
PER_IO_TENSOR = 64 + 32  # persistent TfLiteTensor + its quantization data
PER_CHANNEL = 8  # per-channel output multiplier and shift (int32 each)
FIXED = 1024  # interpreter, subgraph and allocator bookkeeping
PER_CHANNEL_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
# Scratch space TFLite Micro's reference kernels ask for during their op, in bytes per output
# element: integer accumulators of transpose convolution and of mean/sum.
SCRATCH_PER_OUTPUT = {"TRANSPOSE_CONV": 4, "MEAN": 4, "SUM": 4}


@dataclass
class Buffer:
    """One arena buffer: its size and the first and last allocation scope that use it."""

    size: int
    first: int
    last: int
    tensor: int = -1


@dataclass
class ArenaFigure:
    """The tensor arena a model needs, and how the figure was obtained."""

    bytes: int  # what to give MicroInterpreter: kTensorArenaSize
    activations_bytes: int  # the planned, non-persistent part (the arena's head)
    persistent_bytes: int  # the tail: tensor and node structs, kernel data
    margin_bytes: int
    method: str  # "measured" (TFLite Micro on the host) or "estimated" (this planner)
    how: str  # one line saying how, for the report
    planned_activations_bytes: Optional[int] = None  # this planner's head, kept beside a measured one

    def to_dict(self) -> dict:
        return asdict(self)


def align(n: int) -> int:
    """Round N bytes up to TFLite Micro's buffer alignment."""
    return -(-n // ALIGNMENT) * ALIGNMENT


def lifetimes(graph: Graph) -> list[Buffer]:
    """Return the arena buffers of GRAPH with their lifetimes, as TFLite Micro marks them.

    Scope 0 is the start of the invocation, where the graph inputs are created; operator i
    is scope i + 1 and creates its outputs there; graph outputs live to the end. Constant,
    variable and empty tensors are not in the plan. Buffers come in tensor order, as there,
    then the kernels' scratch buffers, each alive during its op.
    """
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in graph.inputs + graph.outputs:
        first[t] = last[t] = 0
    for scope, op in enumerate(graph.operators, start=1):
        for t in op.outputs:
            first[t] = last[t] = scope  # TFLite Micro overwrites the output's mark at its producer
        for t in op.inputs:
            if t >= 0:
                first.setdefault(t, scope)  # read before anything wrote it: a constant, skipped below
                last[t] = scope
    for t in graph.outputs:
        last[t] = len(graph.operators)
    buffers = []
    for t in sorted(first):
        tensor, start = graph.tensors[t], first[t]
        if tensor.constant or tensor.variable or tensor.nbytes == 0:
            continue
        buffers.append(Buffer(align(tensor.nbytes), start, last[t], t))
    for scope, op in enumerate(graph.operators, start=1):  # scratch buffers follow the tensors
        size = scratch_bytes(graph, op)
        if size:
            buffers.append(Buffer(align(size), scope, scope))
    return buffers


def scratch_bytes(graph: Graph, op) -> int:
    """Return the scratch space the reference kernel of OP asks for (integer accumulators)."""
    per = SCRATCH_PER_OUTPUT.get(op.op)
    if not per or not op.outputs:
        return 0
    out = graph.tensors[op.outputs[0]]
    if out.type not in ("INT8", "INT16"):
        return 0
    return per * (2 if op.op == "TRANSPOSE_CONV" and out.type == "INT16" else 1) * out.elements


def plan(buffers: list[Buffer]) -> tuple[int, dict[int, int]]:
    """Place BUFFERS greedily, largest first, each at the lowest offset that fits.

    Returns:
        The arena head (highest end offset) and each buffer's offset, by its position in BUFFERS.
    """
    # A stable sort by size, descending: ties keep the order the buffers were added in.
    order = sorted(range(len(buffers)), key=lambda i: -buffers[i].size)
    placed: list[tuple[int, int]] = []  # (offset, buffer index), kept sorted by offset
    offsets: dict[int, int] = {}
    for i in order:
        b = buffers[i]
        offset = 0
        for other_offset, j in placed:
            o = buffers[j]
            if o.first > b.last or b.first > o.last:
                continue  # not alive at the same time
            if other_offset - offset >= b.size:
                break  # the gap before this buffer is big enough
            offset = max(offset, other_offset + o.size)
        offsets[i] = offset
        placed.append((offset, i))
        placed.sort(key=lambda p: p[0])
    head = max((offsets[i] + buffers[i].size for i in offsets), default=0)
    return head, offsets


def planned_activations(graph: Graph) -> int:
    """Return the non-persistent arena bytes GRAPH needs, as TFLite Micro's planner would place them."""
    return plan(lifetimes(graph))[0]


def estimate_persistent(graph: Graph) -> int:
    """Estimate the arena's persistent tail from the counts of tensors, operators and channels."""
    channels = 0
    for op in graph.operators:
        if op.op in PER_CHANNEL_OPS and op.outputs:
            shape = graph.tensors[op.outputs[0]].shape
            channels += int(shape[-1]) if shape else 1
    io = len(set(graph.inputs) | set(graph.outputs))
    total = (
        FIXED + PER_TENSOR * len(graph.tensors) + PER_OPERATOR * len(graph.operators)
        + PER_IO_TENSOR * io + PER_CHANNEL * channels
    )
    return align(total)


def estimate_arena(graph: Graph) -> ArenaFigure:
    """Estimate the tensor arena: planned activations + estimated persistent part + the margin."""
    activations = planned_activations(graph)
    persistent = estimate_persistent(graph)
    margin = align(int(MARGIN * (activations + persistent)))
    return ArenaFigure(
        bytes=activations + persistent + margin,
        activations_bytes=activations,
        persistent_bytes=persistent,
        margin_bytes=margin,
        method="estimated",
        how=(
            "estimated: TFLite Micro's greedy memory plan over the flatbuffer's tensor lifetimes, "
            f"plus an estimated persistent part and a {MARGIN:.0%} margin; for the measured figure install "
            "TFLite Micro on the host: pip install 'tflite-micro>=0.dev20250101'"
        ),
        planned_activations_bytes=activations,
    )
