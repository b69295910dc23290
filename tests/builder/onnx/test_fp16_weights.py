"""fp16 ONNX builds keep in float32 the weights float16 cannot hold, and the weights of every node kept in float."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgepack.builder.convert.onnx_fp16 import past_fp16_range, to_fp16
from edgepack.profile.schema import IoDtype
from tests.onnx_detectors import blob_images, detector


def run(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def sqnr(ref, out) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum((ref.astype(np.float64) - out) ** 2), 1e-30)))


def exported(model):
    """MODEL with a shape for every tensor, its weights' among them, as exporters write it."""
    return onnx.shape_inference.infer_shapes(model)


def weight_read_by(half, node_name: str, position: int):
    """The initializer that input POSITION of node NODE_NAME reads, through the converter's Cast if any."""
    node = next(n for n in half.graph.node if n.name == node_name)
    producers = {o: n for n in half.graph.node for o in n.output}
    name = node.input[position]
    if name in producers and producers[name].op_type == "Cast":
        name = producers[name].input[0]
    return next(t for t in half.graph.initializer if t.name == name)


def test_a_normalisation_whose_variance_is_past_float16s_range_stays_in_float32_with_its_weights():
    model = exported(detector(0.25, outlier=1.0, norm_variance=1e8))
    assert past_fp16_range(model) == ["head_norm"]
    half = to_fp16(model, IoDtype.float32)
    x = blob_images(4, 64)
    assert sqnr(run(model, x), run(half, x)) > 35
    variance = weight_read_by(half, "head_norm", 4)
    assert variance.data_type == onnx.TensorProto.FLOAT
    assert float(numpy_helper.to_array(variance).max()) == 1e8
    # the other weights are halved: the model is about half its size
    assert len(half.SerializeToString()) < 0.6 * len(model.SerializeToString())


def test_a_node_kept_in_float_reads_its_weights_at_full_precision():
    model = exported(detector(0.25, outlier=1.0))
    half = to_fp16(model, IoDtype.float32, keep_float=["head"])
    kernel = weight_read_by(half, "head", 1)
    assert kernel.data_type == onnx.TensorProto.FLOAT
    original = next(numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.output[0] == "head_w")
    np.testing.assert_array_equal(numpy_helper.to_array(kernel), original)
    assert not [t.name for t in half.graph.initializer if not any(t.name in n.input for n in half.graph.node)]  # nothing left unread


@pytest.mark.slow
def test_jetson_fp16_build_of_a_detector_with_a_huge_normalisation_variance_ships_fp16(isolated_user_dirs, tmp_path):
    from edgepack.builder.pipeline import build

    onnx.save(exported(detector(0.25, outlier=1.0, norm_variance=1e8)), str(tmp_path / "detector.onnx"))
    np.savez(tmp_path / "data.npz", x=blob_images(24, 64))
    result = build(tmp_path / "detector.onnx", "jetson-orin-nano", data=tmp_path / "data.npz", out=tmp_path / "bundle", use_cache=False)

    assert result.passed, result.failures
    assert result.manifest.precision.value == "fp16"
    assert result.manifest.facts.quantization.strategy == "plain"  # no recovery needed: the weight is kept at once
    assert result.manifest.facts.fp16["fp32_nodes"] == ["head_norm"]
    assert result.size_bytes <= 0.65 * (tmp_path / "detector.onnx").stat().st_size
