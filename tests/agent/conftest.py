"""Fixtures for the agent tests: small real models and the bundles that carry them."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from edgepack.bundle import Manifest, TensorSpec, now_utc, write_bundle
from edgepack.profile.store import load_target

N_REFERENCE = 32


def make_bundle(out_dir: Path, artifact: str, content: bytes, reference: dict, inputs=(), outputs=()) -> Path:
    """Write a bundle with ARTIFACT holding CONTENT; the agent reads only `artifact` and the reference."""
    fmt = "onnx" if artifact.endswith(".onnx") else "tflite"
    manifest = Manifest.model_validate(
        {
            "created": now_utc(),
            "status": "ok",
            "target": "test-device",
            "artifact": artifact,
            "format": fmt,
            "precision": "fp32",
            "source": {"path": "model", "kind": "keras", "sha256": "0" * 64},
            "profile": load_target("raspberry-pi-5-onnx" if fmt == "onnx" else "raspberry-pi-4").model_dump(mode="json"),
            "build": {},
            "inputs": [spec.model_dump() for spec in inputs],
            "outputs": [spec.model_dump() for spec in outputs],
            "fidelity": {"n_samples": 0, "max_abs_error": 0.0, "mean_abs_error": 0.0},
            "tools": {},
        }
    )
    return write_bundle(out_dir, manifest, {artifact: content}, reference)


def tflite_specs(model: bytes):
    """Input and output specs of a TFLite model, as the runtime reports them."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)

    def spec(d):
        scale, zero_point = d["quantization"]
        return TensorSpec(
            name=d["name"],
            shape=[int(v) for v in d["shape"]],
            dtype=np.dtype(d["dtype"]).name,
            scale=float(scale) if scale else None,
            zero_point=int(zero_point) if scale else None,
        )

    return [spec(d) for d in it.get_input_details()], [spec(d) for d in it.get_output_details()]


@pytest.fixture
def bundle_factory():
    """make_bundle, for tests that write a bundle of their own."""
    return make_bundle


@pytest.fixture(scope="module")
def digits_models():
    """A small Keras classifier trained on scikit-learn's digits, converted to fp32 and int8 TFLite."""
    import keras
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)

    fp32 = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(200))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings():  # "statistics for quantized inputs": int8 I/O is what we ask for
        warnings.simplefilter("ignore", UserWarning)
        int8 = converter.convert()

    x_ref = x[:N_REFERENCE]
    reference = {"in_0": x_ref, "out_0": model.predict(x_ref, verbose=0).astype("float32")}
    return {"fp32": fp32, "int8": int8, "reference": reference}


@pytest.fixture(scope="module")
def tflite_bundles(digits_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("tflite-bundles")
    bundles = {}
    for precision in ("fp32", "int8"):
        model = digits_models[precision]
        inputs, outputs = tflite_specs(model)
        bundles[precision] = make_bundle(
            root / precision, "model.tflite", model, digits_models["reference"], inputs, outputs
        )
    return bundles


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    """A softmax regression over 64 features with a dynamic batch axis, made with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 10)).astype("float32")
    b = rng.normal(size=10).astype("float32")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["z"]),
            helper.make_node("Softmax", ["z"], ["y"], axis=-1),
        ],
        "digits-softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)

    x = (load_digits().data[:N_REFERENCE] / 16.0).astype("float32")
    z = x @ w + b
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    reference = {"in_0": x, "out_0": (e / e.sum(axis=-1, keepdims=True)).astype("float32")}
    return make_bundle(tmp_path_factory.mktemp("onnx") / "bundle", "model.onnx", model.SerializeToString(), reference)
