"""Fixed sizes for dynamic input dimensions: `--input-shape NAME:1x3x224x224`, and the batch pinned to 1.

An ONNX model exported from PyTorch often has dynamic dimensions (the batch; the height and width
of a detector). With data, they take the data's size and stay dynamic in the artifact; without
data, the batch is pinned to 1 and any other dynamic dimension needs `--input-shape`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import replace

from edgepack.errors import DataError, ModelError
from edgepack.model.source import SourceModel, TensorInfo


def parse_input_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    """Parse `--input-shape` values, NAME:1x3x224x224 (or just 1x3x224x224 for a model with one input).

    Returns:
        Input name ("" where none was given) -> dimensions.

    Raises:
        ModelError: a value that is not NAME:DxDx... with positive integers.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for text in specs:
        name, _, dims = text.strip().rpartition(":")
        if len(name) > 1 and name[0] == name[-1] == "'":  # 'Input:0':1x3 for a name with a colon
            name = name[1:-1]
        if not re.fullmatch(r"\d+(x\d+)*", dims) or any(int(d) < 1 for d in dims.split("x")):
            raise ModelError(f"--input-shape {text!r}: expected NAME:1x3x224x224 (positive sizes joined by x)", hint="e.g. --input-shape images:1x3x640x640")
        if name in shapes:
            raise ModelError(f"--input-shape names input {name!r} twice")
        shapes[name] = tuple(int(d) for d in dims.split("x"))
    return shapes


def with_input_shapes(model: SourceModel, shapes: dict[str, tuple[int, ...]]) -> SourceModel:
    """Return MODEL with the given inputs fixed to static SHAPES (ONNX: in the graph too).

    Raises:
        ModelError: an unknown input name, a rank that differs, or a size that contradicts a static one.
    """
    names = [spec.name for spec in model.inputs]
    if "" in shapes:
        if len(names) != 1 or len(shapes) != 1:
            raise ModelError(f"--input-shape without a name needs a model with one input; this one has {', '.join(names)}", hint="write NAME:DIMS")
        shapes = {names[0]: shapes[""]}
    for name in shapes:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            raise ModelError(
                f"--input-shape names input {name!r}, which the model does not have" + (f": did you mean {close[0]}?" if close else ""),
                hint=f"the model's inputs: {', '.join(names)}",
            )
    inputs = []
    for spec in model.inputs:
        want = shapes.get(spec.name)
        if want is None:
            inputs.append(spec)
            continue
        if len(want) != len(spec.shape) or any(d is not None and d != w for d, w in zip(spec.shape, want)):
            shown = "x".join("?" if d is None else str(d) for d in spec.shape)
            raise ModelError(
                f"--input-shape {spec.name}:{'x'.join(map(str, want))} does not fit input '{spec.name}' of shape {shown}",
                hint="give every dimension, and keep the sizes the model fixes (only ? may change)",
            )
        inputs.append(TensorInfo(spec.name, tuple(want), spec.dtype))
    fixed = replace(model, inputs=inputs, _runner=None)
    if model.onnx_model is not None:
        from edgepack.model.onnx_graph import set_input_shapes

        fixed.onnx_model = set_input_shapes(model.onnx_model, {s.name: s.shape for s in inputs if s.name in shapes})
    return fixed


def pin_dynamic_dims(model: SourceModel) -> SourceModel:
    """Without data, fix an ONNX model's dynamic batch dimension to 1; refuse any other dynamic dimension.

    Raises:
        DataError: a dynamic dimension other than the batch, which needs data or --input-shape.
    """
    dynamic = model.dynamic_inputs()
    if model.kind != "onnx" or not dynamic:
        return model
    for spec in model.inputs:
        if any(d is None for d in spec.shape[1:]):
            names = ", ".join(dynamic[spec.name][1 if spec.shape[0] is None else 0 :])
            example = "x".join(str(d) if d is not None else ("1" if i == 0 else "N") for i, d in enumerate(spec.shape))
            raise DataError(
                f"model input '{spec.name}' has dynamic dimensions ({names}); without data edgepack cannot tell their size",
                hint=f"pass --data with real inputs (their size is used), or fix the size with --input-shape {spec.name}:{example}",
            )
    return with_input_shapes(model, {s.name: (1, *s.shape[1:]) for s in model.inputs if s.shape and s.shape[0] is None})
