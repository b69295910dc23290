"""An op a target's converter cannot lower: one line with the op, where it comes from and the targets that do take the model."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import build_fails_cleanly

pytestmark = pytest.mark.slow


def with_inf_cleanup(path):
    """The ONNX conv classifier behind a node 'clean/IsInf' that zeroes infinite pixels (IsInf + Where)."""
    import onnx
    from onnx import TensorProto, helper

    from tests.builder.onnx.conftest import conv_classifier

    model = conv_classifier()
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["cleaned" if i == "pixels" else i for i in node.input]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    graph.initializer.append(zero)
    graph.node.insert(0, helper.make_node("Where", ["is_inf", "zero", "pixels"], ["cleaned"], name="clean/Where"))
    graph.node.insert(0, helper.make_node("IsInf", ["pixels"], ["is_inf"], name="clean/IsInf"))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_an_onnx_op_the_tflite_converter_cannot_lower_names_op_node_and_the_onnx_targets(onnx2tf, isolated_user_dirs, digits):
    model = with_inf_cleanup(isolated_user_dirs / "clean.onnx")
    x, y = digits
    np.savez(isolated_user_dirs / "d.npz", x=np.ascontiguousarray(x.transpose(0, 3, 1, 2))[:300], y=y[:300])
    result = build_fails_cleanly(["clean.onnx", "--target", "raspberry-pi-4", "--data", "d.npz"], "cannot lower op IsInf at node 'clean/IsInf'")
    assert "ONNX targets run it" in " ".join(result.output.split())
    # ... and they do.
    from edgepack.builder.pipeline import build

    assert build(model, "jetson-orin-nano", data=isolated_user_dirs / "d.npz", use_cache=False).passed


def test_a_pytorch_module_the_tflite_converter_cannot_lower_is_named_by_its_module_path(onnx2tf, torch_digits, isolated_user_dirs):
    import torch
    from torch import nn

    from tests.torch.digits_torch import digits_net

    class Clean(nn.Module):
        def forward(self, x):
            return torch.nan_to_num(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.clean, self.body = Clean(), digits_net()

        def forward(self, x):
            return self.body(self.clean(x))

    program = torch.export.export(Net().eval(), (torch.rand(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, isolated_user_dirs / "net.pt2")
    data = str(torch_digits[2])
    result = build_fails_cleanly(["net.pt2", "--target", "cortex-m4", "--data", data], "(module clean)")
    assert "cannot lower op IsInf" in result.output and "ONNX targets run it" in " ".join(result.output.split())


def test_an_op_pytorchs_onnx_exporter_cannot_lower_names_the_op_and_its_module(torch_digits, isolated_user_dirs):
    import torch
    from torch import nn

    class Odd(nn.Module):
        def forward(self, x):
            return torch.erfinv(x.clamp(-0.9, 0.9))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre, self.fc = nn.Sequential(nn.Conv2d(1, 4, 3), Odd()), nn.Linear(4 * 36, 10)

        def forward(self, x):
            return self.fc(self.pre(x).flatten(1))

    torch.export.save(torch.export.export(Net().eval(), (torch.rand(2, 1, 8, 8),)), isolated_user_dirs / "odd.pt2")
    result = build_fails_cleanly(["odd.pt2", "--target", "jetson-orin-nano", "--data", str(torch_digits[2])], "cannot lower op prims.erf_inv in module pre.1 (Odd)")
    assert "no edgepack target can take the model" in " ".join(result.output.split())
