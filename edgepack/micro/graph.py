"""Read a .tflite flatbuffer into plain tensors and operators: what the op check, the arena
planner and the MAC count work from, without an interpreter."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Bytes per element of each TFLite tensor type (by schema name); INT4/INT2 weights are packed.
TYPE_BYTES = {
    "FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2, "COMPLEX64": 8,
    "INT8": 1, "FLOAT64": 8, "COMPLEX128": 16, "UINT64": 8, "UINT32": 4, "UINT16": 2, "INT4": 0.5,
    "BFLOAT16": 2, "INT2": 0.25, "UINT4": 0.5,
}


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    type: str  # schema name: INT8, INT32, FLOAT32, ...
    constant: bool  # its data is in the flatbuffer (weights, biases, shape constants)
    variable: bool = False  # state kept between invocations (TFLite Micro allocates it apart)
    sparse: bool = False

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= max(int(d), 1)
        return n

    @property
    def nbytes(self) -> int:
        return math.ceil(self.elements * TYPE_BYTES.get(self.type, 4))


@dataclass(frozen=True)
class Operator:
    index: int
    op: str  # builtin name (CONV_2D) or, for a custom op, its custom code
    version: int
    inputs: tuple[int, ...]  # tensor indices; -1 for an omitted optional input
    outputs: tuple[int, ...]
    custom: bool = False


@dataclass
class Graph:
    """The main subgraph of a .tflite model (the one TFLite Micro invokes)."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    subgraphs: int = 1
    size_bytes: int = 0
    _producers: dict[int, int] = field(default_factory=dict, repr=False)

    def producer(self, tensor: int) -> Operator | None:
        """Return the operator that writes TENSOR, or None for inputs and constants."""
        if not self._producers:
            self._producers = {t: op.index for op in self.operators for t in op.outputs}
        i = self._producers.get(tensor)
        return None if i is None else self.operators[i]

    def op_counts(self) -> list[dict]:
        """Return each distinct (op, version) with how often it occurs, in order of first use."""
        counts: dict[tuple[str, int], int] = {}
        for op in self.operators:
            counts[(op.op, op.version)] = counts.get((op.op, op.version), 0) + 1
        return [{"op": op, "version": v, "count": n} for (op, v), n in counts.items()]


def read_graph(content: bytes) -> Graph:
    """Parse a .tflite flatbuffer.

    Args:
        content: the .tflite bytes.

    Returns:
        The main subgraph as a `Graph`.
    """
    from tensorflow.lite.python import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(content, 0))
    op_names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    sub = model.subgraphs[0]
    tensors = []
    for i, t in enumerate(sub.tensors or []):
        buffer = model.buffers[t.buffer] if model.buffers and t.buffer < len(model.buffers) else None
        has_data = buffer is not None and (
            (buffer.data is not None and len(buffer.data) > 0) or (buffer.offset or 0) > 1
        )
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        tensors.append(
            Tensor(
                index=i, name=(t.name or b"").decode("utf-8", "replace"), shape=shape,
                type=type_names.get(t.type, str(t.type)), constant=bool(has_data and t.buffer > 0),
                variable=bool(t.isVariable), sparse=t.sparsity is not None,
            )
        )
    operators = []
    for i, o in enumerate(sub.operators or []):
        code = model.operatorCodes[o.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, str(builtin))
        custom = name == "CUSTOM"
        if custom:
            name = (code.customCode or b"?").decode("utf-8", "replace")
        operators.append(
            Operator(
                index=i, op=name, version=int(code.version or 1), custom=custom,
                inputs=tuple(int(x) for x in (o.inputs if o.inputs is not None else ())),
                outputs=tuple(int(x) for x in (o.outputs if o.outputs is not None else ())),
            )
        )
    return Graph(
        tensors=tensors, operators=operators,
        inputs=[int(x) for x in (sub.inputs if sub.inputs is not None else ())],
        outputs=[int(x) for x in (sub.outputs if sub.outputs is not None else ())],
        subgraphs=len(model.subgraphs), size_bytes=len(content),
    )
