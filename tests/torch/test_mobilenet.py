"""torchvision's MobileNetV3-small builds at fp32 for the TFLite and ONNX families with PyTorch's answers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_target

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target,base", [("pi-fp32", "raspberry-pi-4"), ("phone-fp32", "pixel-8"), ("jetson-fp32", "jetson-orin-nano")])
def test_mobilenet_v3_small_builds_at_fp32_with_answers_matching_pytorch(onnx2tf, isolated_user_dirs, target, base):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'edgepack[torch]')")
    torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed beside this PyTorch")
    from edgepack.builder.pipeline import build

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10).eval()
    x = np.random.default_rng(0).random((40, 3, 96, 96), dtype=np.float32)
    program = torch.export.export(net, (torch.from_numpy(x[:2]),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, isolated_user_dirs / "mnv3.pt2")
    np.savez(isolated_user_dirs / "images.npz", x=x)
    write_target(isolated_user_dirs, target, f"extends: {base}\nbuild: {{precision: fp32}}\n")
    m = build(isolated_user_dirs / "mnv3.pt2", target, data=isolated_user_dirs / "images.npz", use_cache=False).manifest
    assert m.passed, m.notes
    (out,) = m.fidelity.outputs  # an untrained network: its scores are not classes, so compared as values
    assert out.max_rel_error < 1e-3 and out.cosine > 0.9999, out
    assert m.inputs[0].shape[1:] == [3, 96, 96]
