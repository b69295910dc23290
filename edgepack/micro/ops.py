"""The TFLite Micro operator set, and the check that names the layer behind an op it lacks.

TFLite Micro links only the kernels the firmware registers, and has none at all for many
TFLite builtins. An op outside this set, or at a version whose feature TFLite Micro does not
implement, makes `MicroInterpreter` fail on the device at start-up; here it fails the build
with the op and the Keras layer that produced it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgepack.errors import BuildError
from edgepack.micro.graph import Graph, Operator

# Builtin kernels of TFLite Micro, as registered by tflite-micro 0.dev2026 (its Python
# interpreter registers every kernel it has; the firmware registers the few a model needs).
TFLM_BUILTINS = frozenset(
    """
    ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND
    BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM
    DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU EMBEDDING_LOOKUP EQUAL
    EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER
    GREATER_EQUAL HARD_SWISH IF L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG
    LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX MAXIMUM MAX_POOL_2D MEAN MINIMUM
    MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE READ_VARIABLE REDUCE_ALL REDUCE_MAX
    REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT
    SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE
    SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE TRANSPOSE_CONV
    UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE
    """.split()
)
# Custom ops that ship with TFLite Micro (any other custom op needs the user's own kernel).
TFLM_CUSTOM = frozenset({"TFLite_Detection_PostProcess", "CIRCULAR_BUFFER", "ETHOSU"})

# Op versions (tensorflow/lite/tools/versioning/op_version.cc) whose feature TFLite Micro's
# kernels do not implement. Versions not listed here run where the op does.
UNSUPPORTED_VERSIONS: dict[tuple[str, int], str] = {
    ("CONV_2D", 2): "hybrid: float activations with int8 weights",
    ("CONV_2D", 5): "hybrid: float activations with per-channel int8 weights",
    ("DEPTHWISE_CONV_2D", 4): "hybrid: float activations with int8 weights",
    ("DEPTHWISE_CONV_2D", 6): "hybrid: float activations with per-channel int8 weights",
    ("FULLY_CONNECTED", 2): "shuffled 4x16 int8 weights",
    ("FULLY_CONNECTED", 3): "hybrid: float activations with int8 weights",
    ("FULLY_CONNECTED", 8): "sparse weights",
    ("FULLY_CONNECTED", 9): "hybrid with asymmetric input quantization",
    ("FULLY_CONNECTED", 12): "hybrid: float activations with per-channel int8 weights",
    ("SVDF", 2): "hybrid: float activations with int8 weights",
    ("SVDF", 4): "hybrid with asymmetric input quantization",
    ("MUL", 5): "int64 tensors",
    ("MUL", 6): "complex64 tensors",
}

# What to do instead, for ops that common Keras layers lower to.
ADVICE = {
    "GELU": "use activation='relu' or 'hard_swish' (HARD_SWISH is in TFLite Micro) and retrain",
    "TILE": "UpSampling2D lowers to TILE: use keras.layers.Resizing(..., interpolation='nearest') "
    "(RESIZE_NEAREST_NEIGHBOR) instead",
    "POW": "write x**2 as x * x (MUL), or use SQUARE",
    "SELECT": "use tf.where with broadcastable operands (SELECT_V2)",
    "LOCAL_RESPONSE_NORMALIZATION": "use BatchNormalization instead",
    "TOPK_V2": "take the top-k on the host side of the firmware, after the model",
    "ONE_HOT": "feed one-hot inputs from the firmware instead of encoding them in the model",
}


@dataclass(frozen=True)
class MissingOp:
    """An operator the model uses that TFLite Micro cannot run."""

    op: str
    version: int
    layer: str  # "'dense_1' (Dense)", or the tensor's name scope for a model without Keras layers
    reason: str

    def describe(self) -> str:
        return f"{self.op} (version {self.version}) from layer {self.layer}: {self.reason}"


def unsupported_reason(op: Operator) -> str | None:
    """Return why TFLite Micro cannot run OP, or None where it can."""
    if op.custom:
        if op.op in TFLM_CUSTOM:
            return None
        return "a custom op: TFLite Micro runs it only with a kernel the firmware registers itself"
    if op.op not in TFLM_BUILTINS:
        return "TFLite Micro has no kernel for this op"
    why = UNSUPPORTED_VERSIONS.get((op.op, op.version))
    return f"TFLite Micro's kernel lacks this version's feature ({why})" if why else None


def check_ops(graph: Graph, keras_model: Any = None) -> list[MissingOp]:
    """Check every operator of GRAPH against the TFLite Micro op set.

    Args:
        graph: the converted model.
        keras_model: the source Keras model, to name the layer behind each op (optional).

    Returns:
        One entry per distinct (op, version, layer) that TFLite Micro cannot run; empty if none.
    """
    found: dict[tuple, MissingOp] = {}
    for op in graph.operators:
        reason = unsupported_reason(op)
        if reason:
            layer = layer_of(graph, op, keras_model)
            found.setdefault((op.op, op.version, layer), MissingOp(op.op, op.version, layer, reason))
    return list(found.values())


def refuse_missing(missing: list[MissingOp], target: str) -> BuildError:
    """Return the error that stops a build whose model uses ops TFLite Micro lacks."""
    ops = ", ".join(sorted({m.op for m in missing}))
    advice = [ADVICE[m.op] for m in missing if m.op in ADVICE]
    hint = "; ".join(dict.fromkeys(advice)) if advice else (
        "rebuild the model from layers whose ops TFLite Micro has (conv, depthwise conv, dense, "
        "pooling, relu/relu6, add, concatenate, reshape, softmax), or register a custom kernel in the firmware"
    )
    return BuildError(
        f"target '{target}' runs TFLite Micro, which cannot run {ops}",
        hint=hint,
        details=[m.describe() for m in missing],
    )


def layer_of(graph: Graph, op: Operator, keras_model: Any = None) -> str:
    """Name the Keras layer that produced OP, from the name scopes of its tensors.

    The converter names tensors after the TF ops they came from ("model_1/dense_2_1/MatMul");
    under Keras 3 each scope is the layer's name plus a uniquifying "_N" suffix.
    """
    layers = {layer.name: type(layer).__name__ for layer in getattr(keras_model, "layers", [])}
    model_name = getattr(keras_model, "name", None)
    # Outputs first: an op's output is named after the layer that computed it. A fused output
    # with no scope (the graph's output) falls back to the op's non-constant inputs.
    names = [graph.tensors[t].name for t in op.outputs]
    names += [graph.tensors[t].name for t in op.inputs if t >= 0 and not graph.tensors[t].constant]
    scopes = [part for name in names for alias in name.split(";") for part in [alias.split("/")]]
    suffixed = bool(model_name) and any(
        len(s) > 1 and re.fullmatch(rf"{re.escape(model_name)}_\d+", s[0]) for s in scopes
    )
    for scope in scopes:
        for part in scope[1:] if len(scope) > 1 else scope:
            base = re.sub(r"_\d+$", "", part) if suffixed else part
            for candidate in (base, part):
                if candidate in layers:
                    return f"'{candidate}' ({layers[candidate]})"
    # No Keras model (a SavedModel), or no match: the tensor's scope is the best name there is.
    first = next((s for s in scopes if len(s) > 1), scopes[0] if scopes else ["?"])
    return "'" + "/".join(first[:-1] if len(first) > 1 else first) + "'"
