"""Small real models that break plain quantization on purpose, trained on scikit-learn's digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def outlier_input_model(directory: Path, digits) -> tuple[Path, Path]:
    """An MLP whose input has one feature a thousand times larger than the pixels: int8 input
    quantization then rounds every pixel to the same value and the answers collapse.

    The first layer is named `reads_input`; it is the one that must stay in float."""
    import keras

    x, y = digits
    flat = x.reshape(len(x), 64)
    xa = np.concatenate([flat, np.full((len(x), 1), 1000.0, np.float32)], axis=1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((65,)),
        keras.layers.Dense(16, activation="relu", name="reads_input"),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xa[:1200] * np.r_[np.ones(64), 0.001][None].astype(np.float32), y[:1200], epochs=30, verbose=0)
    kernel, bias = model.layers[0].get_weights()
    kernel[64] *= 0.001  # fold the scaling into the weights: the model takes the raw outlier feature
    model.layers[0].set_weights([kernel, bias])
    model.save(directory / "outlier.keras")
    np.savez(directory / "outlier.npz", x=xa[1200:].astype(np.float32), y=y[1200:])
    return directory / "outlier.keras", directory / "outlier.npz"


def fp16_overflow_model(directory: Path, digits) -> tuple[Path, Path]:
    """An MLP whose layer `huge` has weights beyond fp16's range (65504) and whose layer `tiny`
    has weights below its precision; ReLU's scale-equivariance keeps the function unchanged."""
    import keras

    x, y = digits
    flat = x.reshape(len(x), 64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu", name="huge"),
        keras.layers.Dense(64, activation="relu", name="tiny"),
        keras.layers.Dense(10, activation="softmax", name="head"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(flat[:1200], y[:1200], epochs=20, verbose=0)
    kernel, bias = model.layers[0].get_weights()
    model.layers[0].set_weights([kernel * 1e7, bias * 1e7])
    kernel, bias = model.layers[1].get_weights()
    model.layers[1].set_weights([kernel * 1e-7, bias])
    model.save(directory / "fp16break.keras")
    np.savez(directory / "fp16break.npz", x=flat[1200:], y=y[1200:])
    return directory / "fp16break.keras", directory / "fp16break.npz"


def sigmoid_map_model(directory: Path, digits, break_fp16: bool) -> tuple[Path, Path]:
    """A small encoder-decoder that answers a dense sigmoid map (where the digit's ink is), with a
    BatchNormalization and a Conv2DTranspose, as segmentation and detection heads have.

    With BREAK_FP16, the batch norm's scale and shift are multiplied by 1e7 (beyond fp16's 65504)
    and the transposed convolution's kernel divided by as much (below fp16's precision): the same
    function in float32, as ReLU is scale-equivariant, but an fp16 artifact answers a flat map."""
    import keras

    x, _ = digits
    ink = (x > 0.5).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="enc"),
        keras.layers.MaxPooling2D(2),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.Conv2DTranspose(16, 3, strides=2, padding="same", name="up"),
        keras.layers.ReLU(),
        keras.layers.Conv2D(1, 1, activation="sigmoid", name="map"),
    ])
    model.compile("adam", "binary_crossentropy")
    model.fit(x[:1200], ink[:1200], epochs=15, verbose=0)
    if break_fp16:
        bn = model.get_layer("bn")
        gamma, beta, mean, var = bn.get_weights()
        bn.set_weights([gamma * 1e7, beta * 1e7, mean, var])
        kernel, bias = model.get_layer("up").get_weights()
        model.get_layer("up").set_weights([kernel * 1e-7, bias])
    name = "mapbreak" if break_fp16 else "map"
    model.save(directory / f"{name}.keras")
    np.savez(directory / f"{name}.npz", x=x[1200:])
    return directory / f"{name}.keras", directory / f"{name}.npz"


def integer_input_onnx_model(directory: Path, vocab: int = 256, length: int = 12, classes: int = 10) -> tuple[Path, Path]:
    """An ONNX classifier fed integer ids (bytes, tokens): Gather from an embedding, mean, dense, softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    emb = rng.normal(0, 1, (vocab, 16)).astype(np.float32)
    w = rng.normal(0, 0.5, (16, classes)).astype(np.float32)
    b = rng.normal(0, 0.1, (classes,)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["vectors"], axis=0, name="embed"),
        helper.make_node("ReduceMean", ["vectors"], ["pooled"], axes=[1], keepdims=0, name="pool"),
        helper.make_node("MatMul", ["pooled", "w"], ["logits0"], name="dense"),
        helper.make_node("Add", ["logits0", "b"], ["logits"], name="bias"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "ids_classifier", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, length])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, classes])],
        [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, directory / "ids.onnx")
    np.savez(directory / "ids.npz", x=rng.integers(0, vocab, (600, length)).astype(np.int64))
    return directory / "ids.onnx", directory / "ids.npz"
