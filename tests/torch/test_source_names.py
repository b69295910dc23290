"""The per-layer explanation names layers as the user wrote them: the PyTorch module path, or the ONNX node."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target", ["raspberry-pi-4", "raspberry-pi-5-onnx"])
def test_explained_layers_of_a_pytorch_model_carry_their_module_paths(onnx2tf, torch_digits, target):
    from edgepack.builder.pipeline import build

    model, _, data = torch_digits
    m = build(model, target, data=data, use_cache=False, explain=True).manifest
    layers = {e["layer"] for e in m.facts.quantization.layer_errors}
    # digits_net: features = Conv2d, ReLU, Conv2d, ReLU, MaxPool2d; head = Flatten, Linear, ReLU, Linear.
    assert any(name.startswith("features.") and " (node_" in name for name in layers), layers  # the module, then the ONNX node
    if target == "raspberry-pi-4":  # TFLite charges each op its own error: the convolutions and linear layers by name
        assert {"features.0", "features.2", "head.1", "head.3"} <= {name.split(" (")[0] for name in layers}, layers
    else:  # ONNX QDQ charges the tensors as their readers see them: after each activation, the pool and the last linear
        modules = {f"features.{i}" for i in range(5)} | {f"head.{i}" for i in range(4)}
        assert all(name.split(" (")[0] in modules and " (node_" in name for name in layers), layers
        assert {"features.1", "features.3", "head.3"} <= {name.split(" (")[0] for name in layers}, layers


def test_explained_layers_of_an_onnx_model_built_for_tflite_are_its_node_names(onnx2tf, digits_onnx_nhwc):
    import onnx

    from edgepack.builder.pipeline import build

    model, data = digits_onnx_nhwc
    nodes = {n.name for n in onnx.load(str(model)).graph.node}
    m = build(model, "raspberry-pi-4", data=data, use_cache=False, explain=True).manifest
    layers = [e["layer"] for e in m.facts.quantization.layer_errors if e["op"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(layers) == 4 and set(layers) <= nodes, (layers, nodes)
