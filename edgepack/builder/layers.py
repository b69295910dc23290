"""Per-layer facts of a built artifact for the manifest, whatever its format.

`layer_precisions` lists each compute op with the precision it runs in (TFLite artifacts; an
artifact of another format has no such table yet and gets an empty one); `layer_names` maps a
TFLite op to the Keras layer that made it (also what recovery's per-layer tables are named by).
"""

from __future__ import annotations

import re

import numpy as np

from edgepack.builder.convert import Artifact
from edgepack.builder.recover.common import short_layer
from edgepack.model.source import SourceModel


def layer_names(content: bytes, model: SourceModel) -> dict[str, str]:
    """Map each op's output tensor in a TFLite model to the Keras layer that made it.

    TensorFlow re-suffixes name scopes while tracing ("dense" may appear as "dense_1", and
    "dense_1" as "dense_1_2"), so a graph name alone can point at the wrong layer. A layer is
    matched by its kernel's shape among the layers whose name the graph name could stand for."""
    if model.keras_model is None:
        return {}
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgepack.builder.prune.keras import all_layers

    kernels = {}
    for layer in all_layers(model.keras_model):
        kernel = getattr(layer, "kernel", None) if hasattr(layer, "kernel") else getattr(layer, "depthwise_kernel", None)
        kernels[layer.name] = sorted(kernel.shape) if kernel is not None else None
    it = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {d["index"]: d for d in it.get_tensor_details()}
    ops = it._get_ops_details()
    made_by = {t: op for op in ops for t in op["outputs"]}
    mapping = {}
    for op in ops:
        if not len(op["outputs"]):
            continue
        name = tensors[op["outputs"][0]]["name"]
        raw = short_layer(name)
        candidates = [n for n in kernels if raw == n or re.fullmatch(re.escape(n) + r"_\d+", raw)]
        shapes = []
        for i in op["inputs"][1:]:  # the first input is the activation; weights follow
            source = made_by.get(i)
            if source is not None and source["op_name"] == "DEQUANTIZE":
                i = source["inputs"][0]  # fp16 weights behind a DEQUANTIZE
            if i >= 0 and len(tensors[i]["shape"]) >= 2:
                shapes.append(sorted(int(d) for d in tensors[i]["shape"]))
        fitting = [n for n in candidates if kernels[n] is not None and kernels[n] in shapes]
        chosen = fitting if fitting else candidates
        mapping[name] = chosen[0] if len(chosen) == 1 else (raw if raw in chosen or not chosen else chosen[0])
    return mapping


def layer_precisions(artifact: Artifact, model: SourceModel) -> list[dict]:
    """Return each compute op of a TFLite artifact with the precision it runs in (its output's type)."""
    if not artifact.artifact.endswith(".tflite"):
        return []
    from ai_edge_litert.interpreter import Interpreter

    content = artifact.files[artifact.artifact]
    names = layer_names(content, model)
    it = Interpreter(model_content=content)
    tensors = {d["index"]: d for d in it.get_tensor_details()}
    rows = []
    for op in it._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE", "DELEGATE") or not len(op["outputs"]):
            continue
        out = tensors[op["outputs"][0]]
        rows.append({"layer": names.get(out["name"], short_layer(out["name"])), "op": op["op_name"], "precision": np.dtype(out["dtype"]).name})
    return rows
