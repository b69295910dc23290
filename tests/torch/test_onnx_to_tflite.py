"""An ONNX model builds for the TFLite and microcontroller targets (through onnx2tf), within each target's accuracy budget."""

from __future__ import annotations

import pytest

from tests.conftest import write_target

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target", ["raspberry-pi-4", "pi-fp16", "cortex-m4"])
def test_an_onnx_model_builds_for_tflite_and_micro_targets_within_the_accuracy_budget(onnx2tf, digits_onnx_nhwc, isolated_user_dirs, target):
    from edgepack.builder.pipeline import build
    from edgepack.profile.schema import Format, Precision

    if target == "pi-fp16":
        write_target(isolated_user_dirs, target, "extends: raspberry-pi-4\nbuild: {precision: fp16}\n")
    model, data = digits_onnx_nhwc
    result = build(model, target, data=data, use_cache=False)
    m = result.manifest
    assert result.passed, m.notes
    assert m.source.kind == "onnx"
    assert m.format is (Format.tflite_micro if target == "cortex-m4" else Format.tflite)
    assert m.precision is (Precision.fp16 if target == "pi-fp16" else Precision.int8)
    assert m.fidelity.accuracy_original > 0.9
    assert m.fidelity.accuracy_drop <= m.profile.budgets.max_accuracy_drop
    assert [o.name for o in m.outputs] == ["scores"]  # the ONNX output's name, not the converter's output_0
    if target == "cortex-m4":
        micro = m.facts.micro
        assert micro.arena["bytes"] > 0 and micro.fit.fits
        assert (result.bundle / "model_data.cc").is_file()
    if m.precision is Precision.int8:
        assert m.inputs[0].shape[1:] == [8, 8, 1]
        assert any("onnx2tf" in n for n in m.notes)
