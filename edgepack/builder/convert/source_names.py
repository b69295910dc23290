"""Name a built layer after its source: the PyTorch module path, or the ONNX node.

A model built from an ONNX graph (given, or exported from PyTorch) reaches its artifact under the
converters' names: `node_conv2d` in an ONNX export, `tf.nn.relu_1` in a TFLite model onnx2tf made.
The per-layer explanation and the recovery notes name layers as the user wrote them instead:
`features.0 (node_conv2d)` for a PyTorch module (its path as `named_modules()` gives it, then the
ONNX node), the node name alone for an ONNX source.

TFLite ops are matched to ONNX nodes by kind, in graph order (the k-th CONV_2D is the k-th Conv),
and a weighted op only where its weight has the shape of the node's: a layer without a sure match
keeps the converter's name.
"""

from __future__ import annotations

# TFLite op -> the ONNX ops it may come from (onnx2tf converts node by node, in graph order).
# Element-wise ops are left out: a converter folds some of them (a bias Add into its layer).
TFLITE_FROM_ONNX = {
    "CONV_2D": ("Conv",), "DEPTHWISE_CONV_2D": ("Conv",), "TRANSPOSE_CONV": ("ConvTranspose",),
    "FULLY_CONNECTED": ("Gemm", "MatMul"), "BATCH_MATMUL": ("MatMul",),
    "MAX_POOL_2D": ("MaxPool",), "AVERAGE_POOL_2D": ("AveragePool", "GlobalAveragePool"), "MEAN": ("GlobalAveragePool", "ReduceMean"),
    "SOFTMAX": ("Softmax",), "LOGISTIC": ("Sigmoid",), "HARD_SWISH": ("HardSwish",), "TANH": ("Tanh",),
}
WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED"}


def describe(proto, node_name: str, modules: dict[str, str] | None = None) -> str:
    """'features.0 (node_conv2d)' for a node a PyTorch module made, else the node name."""
    if modules is None:
        from edgepack.model.torch_source import source_names

        modules = source_names(proto)
    module = modules.get(node_name)
    return f"{module} ({node_name})" if module else node_name


def onnx_layer_names(proto, names: list[str]) -> dict[str, str]:
    """ONNX node or output tensor names (an ONNX artifact's layers) -> their source names."""
    from edgepack.model.torch_source import source_names

    modules = source_names(proto)
    nodes = {n.name for n in proto.graph.node}
    made_by = {out: n.name for n in proto.graph.node for out in n.output}
    found = {}
    for name in names:
        node = name if name in nodes else made_by.get(name)
        if node is not None:
            found[name] = describe(proto, node, modules)
    return found


def tflite_layer_names(proto, content: bytes) -> dict[str, str]:
    """Each TFLite op's output tensor name -> the source name of the ONNX node it was converted from."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgepack.model.torch_source import source_names

    modules = source_names(proto)
    shapes = {t.name: sorted(int(d) for d in t.dims) for t in proto.graph.initializer}
    queues: dict[str, list] = {}
    for node in proto.graph.node:
        queues.setdefault(node.op_type, []).append(node)
    it = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {d["index"]: d for d in it.get_tensor_details()}
    ops = it._get_ops_details()  # the interpreter's op list (no public equivalent)
    position = {id(n): i for i, n in enumerate(proto.graph.node)}
    counts: dict[str, int] = {}
    for op in ops:
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    # An op without weights is matched by order only where both graphs have as many of its kind.
    trusted = {name for name, kinds in TFLITE_FROM_ONNX.items() if name in WEIGHTED or counts.get(name) == sum(len(queues.get(k, [])) for k in kinds)}
    found = {}
    for op in ops:
        kinds = TFLITE_FROM_ONNX.get(op["op_name"])
        if not kinds or not len(op["outputs"]) or op["op_name"] not in trusted:
            continue
        candidates = [q for q in (queues.get(k) for k in kinds) if q]
        if not candidates:
            continue
        node = min((q[0] for q in candidates), key=lambda n: position[id(n)])
        if op["op_name"] in WEIGHTED:
            weight = next((tensors[i] for i in op["inputs"][1:2] if i >= 0), None)
            theirs = [shapes[i] for i in node.input[1:2] if i in shapes]
            if weight is None or not theirs or sorted(int(d) for d in np.asarray(weight["shape"])) != theirs[0]:
                continue  # not a sure match: keep the converter's name
        queues[node.op_type].pop(0)
        found[tensors[op["outputs"][0]]["name"]] = describe(proto, node.name, modules)
    for op in ops:  # a float output behind a (de)quantize keeps the layer's name (the debugger's model has no such op)
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") and len(op["inputs"]) and len(op["outputs"]):
            before = tensors[op["inputs"][0]]["name"]
            if before in found:
                found.setdefault(tensors[op["outputs"][0]]["name"], found[before])
    return found


def name_layers(outcome, proto, content: bytes | None, fmt: str) -> None:
    """Rename OUTCOME's per-layer errors and the layers its attempts kept in float after their source."""
    if not outcome.layers and not any(a.float_layers for a in outcome.attempts):
        return
    if fmt == "onnx":
        by_tensor = onnx_layer_names(proto, [e.layer for e in outcome.layers] + [e.tensor for e in outcome.layers])
        renamed = {e.layer: by_tensor.get(e.layer) or by_tensor.get(e.tensor) for e in outcome.layers}
    elif content is not None:
        from edgepack.builder.recover.common import short_layer

        by_tensor = tflite_layer_names(proto, content)
        renamed = {short_layer(t): name for t, name in by_tensor.items()}
        renamed.update({e.layer: by_tensor[e.tensor] for e in outcome.layers if e.tensor in by_tensor})
    else:
        return
    for e in outcome.layers:
        e.layer = renamed.get(e.layer) or e.layer
    for a in outcome.attempts:
        a.float_layers = [renamed.get(n) or n for n in a.float_layers]
