"""int8 weights with float activations: the TFLite and ONNX writers, and the recovery rung that
keeps int8's size where 8-bit activations cannot meet the gate."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_target
from tests.detectors import detector_images, detector_model, write_detector
from tests.onnx_detectors import blob_images, detector


def sqnr(ref, out) -> float:
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - out) ** 2), 1e-30)))


def tflite_outputs(content: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    answers = []
    for i in range(len(x)):
        it.set_tensor(inp, x[i : i + 1])
        it.invoke()
        answers.append(it.get_tensor(out).copy())
    return np.concatenate(answers)


@pytest.fixture(scope="module")
def tiny_tflite():
    import tensorflow as tf

    model = detector_model(64, backbone="tiny")
    return model, tf.lite.TFLiteConverter.from_keras_model(model).convert()


@pytest.mark.slow
def test_tflite_writer_stores_every_filter_in_int8_per_channel_and_answers_like_fp32(tiny_tflite):
    from ai_edge_litert.interpreter import Interpreter

    from edgepack.builder.convert.tflite_mixed import int8_weights_except

    _, fp32 = tiny_tflite
    lowered = int8_weights_except(fp32, set())
    x = detector_images(64, 6)
    assert sqnr(tflite_outputs(fp32, x), tflite_outputs(lowered, x)) > 35
    assert len(lowered) < 0.35 * len(fp32)
    it = Interpreter(model_content=lowered)
    ops = it._get_ops_details()
    dequantized = [op for op in ops if op["op_name"] == "DEQUANTIZE"]
    filters = [op for op in ops if op["op_name"] in ("CONV_2D", "TRANSPOSE_CONV")]
    assert len(dequantized) == len(filters)  # one int8 filter per convolution, each read through a DEQUANTIZE
    for op in dequantized:
        (source,) = [d for d in it.get_tensor_details() if d["index"] == op["inputs"][0]]
        params = source["quantization_parameters"]
        assert source["dtype"] == np.int8 and len(params["scales"]) == source["shape"][params["quantized_dimension"]]  # per output channel


@pytest.mark.slow
def test_tflite_writer_leaves_the_layers_named_in_float(tiny_tflite):
    from ai_edge_litert.interpreter import Interpreter

    from edgepack.builder.convert.tflite_mixed import int8_weights_except

    _, fp32 = tiny_tflite
    it = Interpreter(model_content=fp32)
    convs = [op for op in it._get_ops_details() if op["op_name"] == "CONV_2D"]
    names = {d["index"]: d["name"] for d in it.get_tensor_details()}
    kept = names[convs[0]["outputs"][0]]
    lowered = Interpreter(model_content=int8_weights_except(fp32, {kept}))
    ops = lowered._get_ops_details()
    assert sum(op["op_name"] == "DEQUANTIZE" for op in ops) == sum(op["op_name"] in ("CONV_2D", "TRANSPOSE_CONV") for op in ops) - 1
    first = next(op for op in ops if op["op_name"] == "CONV_2D")
    assert not any(op["op_name"] == "DEQUANTIZE" and first["inputs"][1] in op["outputs"] for op in ops)


def test_onnx_writer_stores_constant_weights_in_int8_and_answers_like_fp32():
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgepack.builder.convert.onnx_weights import int8_weights

    model = detector(0.25, outlier=1.0)  # opset 12, Constant weights, ConvTranspose
    lowered, facts = int8_weights(model, keep_float=["head"])
    onnx.checker.check_model(lowered)
    weighted = [n for n in lowered.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert facts["int8_weights"] == len(weighted) - 1 and facts["opset_upgraded"]
    ints = {t.name for t in lowered.graph.initializer if t.data_type == onnx.TensorProto.INT8 and numpy_helper.to_array(t).ndim == 4}
    assert len(ints) == len(weighted) - 1
    head = next(n for n in lowered.graph.node if n.name == "head")
    assert head.input[1] in {t.name for t in lowered.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    x = blob_images(4, 64)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]  # noqa: E731
    assert sqnr(run(model), run(lowered)) > 35
    assert len(lowered.SerializeToString()) < 0.4 * len(model.SerializeToString())


STRICT = "verify: {min_sqnr_db: 30}\n"  # stricter than 8-bit activations hold on these models, not their weights


@pytest.fixture()
def same_speed_as_fp32(monkeypatch):
    """The host-speed comparison is not what these tests are about."""
    import edgepack.builder.host_latency as host_latency

    monkeypatch.setattr(host_latency, "compare_latency", lambda a, b, inputs: (1.0, 1.0))


@pytest.mark.slow
def test_tflite_build_keeps_int8_weights_where_int8_activations_miss_the_gate(isolated_user_dirs, tmp_path, same_speed_as_fp32):
    from edgepack.builder.pipeline import build
    from edgepack.builder.recover.common import WEIGHT_ONLY

    model, data = write_detector(tmp_path, 64, n=48, backbone="tiny")
    target = write_target(isolated_user_dirs, "pi4-strict", "extends: raspberry-pi-4\n" + STRICT)
    result = build(model, target, data=data, out=tmp_path / "bundle", use_cache=False)
    q = result.manifest.facts.quantization
    assert not q.attempts[0]["passed"], q.attempts
    assert result.passed and q.strategy == WEIGHT_ONLY, q.attempts
    assert result.manifest.precision.value == "int8"
    assert result.size_bytes <= 0.45 * 4 * result.manifest.source.params
    assert q.attempts[-1]["strategy"] == WEIGHT_ONLY  # chosen before 16-bit activations, which would not do better


@pytest.mark.slow
def test_onnx_build_keeps_int8_weights_where_int8_activations_miss_the_gate(isolated_user_dirs, tmp_path, same_speed_as_fp32):
    import onnx

    from edgepack.builder.pipeline import build
    from edgepack.builder.recover.common import WEIGHT_ONLY

    onnx.save(detector(0.25, outlier=1.0), str(tmp_path / "detector.onnx"))
    np.savez(tmp_path / "data.npz", x=blob_images(32, 64))
    target = write_target(isolated_user_dirs, "pi5-strict", "extends: raspberry-pi-5-onnx\n" + STRICT)
    result = build(tmp_path / "detector.onnx", target, data=tmp_path / "data.npz", out=tmp_path / "bundle", use_cache=False)
    q = result.manifest.facts.quantization
    assert not q.attempts[0]["passed"], q.attempts
    assert result.passed and q.strategy == WEIGHT_ONLY, q.attempts
    assert result.manifest.precision.value == "int8"
    assert result.size_bytes <= 0.45 * (tmp_path / "detector.onnx").stat().st_size
    assert result.manifest.facts.onnx_quantization["activations"] == "float"


def test_onnx_writer_quantizes_a_batched_matmul_weight_per_output_column():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgepack.builder.convert.onnx_weights import int8_weights

    rng = np.random.default_rng(0)
    weight = rng.normal(0, 1, (2, 16, 8)).astype(np.float32) * np.geomspace(0.01, 100, 8).astype(np.float32)  # columns 10^4 apart
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8])], [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    lowered, facts = int8_weights(model)
    onnx.checker.check_model(lowered)
    x = rng.normal(0, 1, (2, 4, 16)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    ref, out = run(model), run(lowered)
    assert facts["int8_weights"] == 1
    assert all(sqnr(ref[..., j], out[..., j]) > 35 for j in range(8))  # the smallest column keeps its own scale
