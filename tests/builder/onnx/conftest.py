"""ONNX models for the ONNX tests: the digits CNN exported by tf2onnx, and small graphs made with onnx.helper."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_onnx(tmp_path_factory, digits_files):
    """The digits CNN exported to ONNX with tf2onnx directly (not through edgepack), as a user would."""
    import keras
    import tensorflow as tf
    import tf2onnx

    model = keras.models.load_model(digits_files[0])
    spec = [tf.TensorSpec((None, 8, 8, 1), tf.float32, name="image")]
    function = tf.function(lambda image: model(image, training=False))
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=17)
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


def conv_classifier(batch="batch", height=8, width=8, opset: int = 17, seed: int = 0):
    """A small NCHW classifier made with onnx.helper: Conv-Relu-GlobalAveragePool-MatMul-Softmax.

    BATCH, HEIGHT and WIDTH are an int (static) or a name (dynamic).
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 0.1, 8).astype(np.float32)
    dense = rng.normal(0, 1.0, (8, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["pixels", "kernel", "bias"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "dense"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
        ],
        "conv-classifier",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 1, height, width])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 10])],
        [numpy_helper.from_array(kernel, "kernel"), numpy_helper.from_array(bias, "bias"), numpy_helper.from_array(dense, "dense")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx.helper")
    model.ir_version = 8
    return model


def nchw_digits(digits, height=8, width=8):
    """The digits as (N, 1, H, W) float32, resized where asked."""
    x, y = digits
    images = x[..., 0][:, None]
    if (height, width) != (8, 8):
        images = np.repeat(np.repeat(images, height // 8, axis=2), width // 8, axis=3)
    return images.astype(np.float32), y
