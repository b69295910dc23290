"""Export a Keras or SavedModel source to ONNX with tf2onnx.

tf2onnx's `from_keras` fails on Keras 3 models, so both kinds go through `from_function` on a
`tf.function` that calls the model; the graph's outputs are renamed to the source model's output
names (output_0, ... for Keras; the signature keys for a SavedModel) so that the two line up.
"""

from __future__ import annotations

from edgepack.errors import BuildError
from edgepack.model.source import SourceModel


def tf_to_onnx(model: SourceModel, opset: int):
    """Convert a Keras or SavedModel source to an onnx.ModelProto at OPSET.

    Raises:
        BuildError: tf2onnx cannot convert the graph (an op without an ONNX equivalent at OPSET).
    """
    import tensorflow as tf
    import tf2onnx

    specs = [tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name=spec.name) for spec in model.inputs]
    names = [spec.name for spec in model.inputs]
    if model.keras_model is not None:
        keras_model = model.keras_model

        @tf.function(input_signature=specs)
        def call(*args):
            out = keras_model(list(args) if len(args) > 1 else args[0], training=False)
            return list(out) if isinstance(out, (list, tuple)) else [out]

    else:
        signature = model.signature

        @tf.function(input_signature=specs)
        def call(*args):
            result = signature(**dict(zip(names, args)))
            return [result[o.name] for o in model.outputs]

    try:
        proto, _ = tf2onnx.convert.from_function(call, input_signature=specs, opset=opset)
    except Exception as exc:  # tf2onnx raises many types, some with long graph dumps
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise BuildError(
            f"tf2onnx could not convert {model.path} at opset {opset}: {first[:300]}",
            hint="an op without an ONNX equivalent at this opset: try a newer build.onnx.opset, or simplify the model",
        ) from None
    rename_outputs(proto, [o.name for o in model.outputs])
    proto.producer_name = "edgepack (tf2onnx)"
    return proto


def rename_outputs(proto, names: list[str]) -> None:
    """Rename the graph's outputs, in order, to NAMES (everywhere the tensors are used)."""
    old = [o.name for o in proto.graph.output]
    if len(old) != len(names):
        raise BuildError(f"the ONNX export has {len(old)} outputs, the source model {len(names)}")
    mapping = {o: n for o, n in zip(old, names) if o != n}
    if not mapping:
        return
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
    for value in list(proto.graph.output) + list(proto.graph.value_info):
        if value.name in mapping:
            value.name = mapping[value.name]
