"""Magnitude pruning of an ONNX model's weights (initializers), per tensor (the prune step for ONNX sources).

The weights are the constant kernels of Conv, ConvTranspose, Gemm and MatMul nodes; biases and
normalisation parameters are left alone, as in `edgepack.builder.prune.keras`. An ONNX graph has
no training loop here, so there is no fine-tuning afterwards: keep the sparsity moderate.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgepack.builder.prune import Pruned, PruneReport
from edgepack.errors import BuildError
from edgepack.model.source import SourceModel

# op type -> the input positions that hold a weight kernel
KERNEL_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (1,), "MatMul": (0, 1)}
FLOAT_TYPES = (1, 10, 11)  # float32, float16, float64


def kernel_names(model) -> list[str]:
    """Return the names of the initializers that magnitude pruning applies to, in graph order."""
    initializers = {t.name: t for t in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        for position in KERNEL_INPUTS.get(node.op_type, ()):
            if position < len(node.input):
                name = node.input[position]
                tensor = initializers.get(name)
                if tensor is not None and tensor.data_type in FLOAT_TYPES and len(tensor.dims) >= 2 and name not in names:
                    names.append(name)
    return names


def magnitude_prune(model, sparsity: float):
    """Zero the fraction SPARSITY of smallest-magnitude weights in each kernel of a copy of MODEL.

    Returns:
        (the pruned model, the measured fraction of zeros over all kernels, the kernels pruned).
    """
    import onnx
    from onnx import numpy_helper

    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    names = set(kernel_names(pruned))
    zeros = total = 0
    for i, tensor in enumerate(pruned.graph.initializer):
        if tensor.name not in names:
            continue
        w = numpy_helper.to_array(tensor)
        k = int(round(sparsity * w.size))
        if k > 0:
            flat = w.ravel().copy()
            flat[np.argpartition(np.abs(flat), k - 1)[:k]] = 0
            w = flat.reshape(w.shape)
            pruned.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, tensor.name))
        zeros += int(np.count_nonzero(w == 0))
        total += w.size
    return pruned, (zeros / total if total else 0.0), sorted(names)


def prune(original: SourceModel, p) -> Pruned:
    """Zero the smallest weights of ORIGINAL's kernels as P (build.prune) says; channels cannot be pruned here.

    Raises:
        BuildError: channel pruning was asked for (it rebuilds Keras layers).
    """
    if p.channels > 0:
        raise BuildError(
            f"{original.path}: channel pruning rebuilds Keras layers; it cannot edit an ONNX graph",
            hint="set build.prune.channels: 0 (build.prune.sparsity works on ONNX weights), or build from the Keras model",
        )
    pruned, sparsity, _ = magnitude_prune(original.onnx_model, p.sparsity)
    report = PruneReport(params_before=original.params, params_after=original.params, sparsity=sparsity)
    return Pruned(replace(original, onnx_model=pruned, _runner=None), report)
