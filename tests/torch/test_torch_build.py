"""PyTorch models in: a .pt2 program or a `pkg.module:factory` builds for every target family, within each budget."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

FACTORY = '''
import torch
from tests.torch.digits_torch import digits_net


def make_model():
    net = digits_net()
    net.load_state_dict(torch.load({weights!r}))
    return net
'''


@pytest.mark.parametrize("target", ["raspberry-pi-4", "cortex-m4", "jetson-orin-nano", "raspberry-pi-5-onnx"])
def test_a_pt2_program_builds_for_every_family_within_its_accuracy_budget(onnx2tf, torch_digits, target):
    from edgepack.builder.pipeline import build
    from edgepack.profile.schema import Format, Precision

    model, _, data = torch_digits
    result = build(model, target, data=data, use_cache=False)
    m = result.manifest
    assert result.passed, m.notes
    assert m.source.kind == "pytorch" and m.source.params > 5000
    f = m.fidelity
    assert f.accuracy_original > 0.9  # PyTorch's own answers on the held-out digits are the reference
    assert f.accuracy_drop <= m.profile.budgets.max_accuracy_drop
    expected = {
        "raspberry-pi-4": (Format.tflite, Precision.int8), "cortex-m4": (Format.tflite_micro, Precision.int8),
        "jetson-orin-nano": (Format.onnx, Precision.fp16), "raspberry-pi-5-onnx": (Format.onnx, Precision.int8),
    }[target]
    assert (m.format, m.precision) == expected
    assert m.inputs[0].shape[1:] == [1, 8, 8]  # the PyTorch layout (NCHW) is kept on every target
    if m.format is Format.onnx:
        assert m.inputs[0].shape[0] is None  # the dynamic batch is kept where the runtime allows it
    else:
        assert m.inputs[0].shape[0] == 1 and any("batch 1" in n for n in m.notes)
    if target == "cortex-m4":
        assert m.facts.micro.fit.fits and (result.bundle / "model_data.cc").is_file()
    assert m.tools["torch"]


def test_a_factory_builds_from_the_command_line_with_the_input_shape_from_data(onnx2tf, torch_digits, isolated_user_dirs):
    from typer.testing import CliRunner

    from edgepack.bundle import read_manifest
    from edgepack.cli.app import app

    _, weights, data = torch_digits
    (isolated_user_dirs / "digits_models.py").write_text(FACTORY.format(weights=str(weights)))
    result = CliRunner().invoke(app, ["build", "digits_models:make_model", "--target", "raspberry-pi-5-onnx", "--data", str(data), "--out", "out"])
    assert result.exit_code == 0, result.output
    m = read_manifest(isolated_user_dirs / "out")
    assert m.source.kind == "pytorch" and m.source.path == "digits_models:make_model"
    assert m.inputs[0].shape == [None, 1, 8, 8] and m.fidelity.accuracy_original > 0.9


def test_a_factory_without_data_says_it_needs_data(torch_digits, isolated_user_dirs):
    from tests.conftest import build_fails_cleanly

    _, weights, _ = torch_digits
    (isolated_user_dirs / "digits_models.py").write_text(FACTORY.format(weights=str(weights)))
    build_fails_cleanly(["digits_models:make_model", "--target", "jetson-orin-nano"], "a model factory needs --data to know its input's shape")


def test_without_pytorch_a_pt2_build_names_the_pip_command(isolated_user_dirs):
    (isolated_user_dirs / "m.pt2").write_bytes(b"PK")
    code = "import sys; sys.modules['torch'] = None\nfrom edgepack.cli.app import main\nsys.argv = ['edgepack', 'build', 'm.pt2', '--target', 'jetson-orin-nano']\nmain()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=isolated_user_dirs, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "needs PyTorch" in output and "pip install 'edgepack[torch]'" in output
    assert "Traceback" not in output


def test_a_program_exported_at_a_fixed_batch_keeps_it_with_a_note(torch_digits, isolated_user_dirs):
    import torch

    from edgepack.builder.pipeline import build
    from tests.torch.digits_torch import digits_net

    _, weights, data = torch_digits
    net = digits_net()
    net.load_state_dict(torch.load(weights))
    torch.export.save(torch.export.export(net.eval(), (torch.zeros(1, 1, 8, 8),)), isolated_user_dirs / "fixed.pt2")
    result = build(isolated_user_dirs / "fixed.pt2", "jetson-orin-nano", data=data, use_cache=False)
    m = result.manifest
    assert result.passed and m.inputs[0].shape == [1, 1, 8, 8]
    assert any("exported at a fixed batch of 1" in n for n in m.notes)


def test_dry_run_shows_the_pytorch_route(torch_digits, isolated_user_dirs):
    from typer.testing import CliRunner

    from edgepack.cli.app import app

    model, _, data = torch_digits
    result = CliRunner().invoke(app, ["build", str(model), "--target", "cortex-m4", "--data", str(data), "--dry-run"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "exported to ONNX (torch.onnx, dynamo)" in text and "ONNX -> SavedModel (onnx2tf), then tflite-micro int8" in text
