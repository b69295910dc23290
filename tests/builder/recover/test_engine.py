"""When int8 or fp16 breaks a model: explain which layers, and recover within the budgets."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgepack.builder.pipeline import build
from edgepack.cli.app import app
from edgepack.errors import BuildError
from tests.conftest import write_target
from tests.hard_models import fp16_overflow_model, outlier_input_model

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(autouse=True)
def same_speed_as_fp32(monkeypatch):
    """Recovery compares the variant it chose with fp32 on this host; timings are not what these
    tests are about (a busy test machine would make them flaky), so both run alike here unless a
    test says otherwise."""
    import edgepack.builder.host_latency as host_latency

    monkeypatch.setattr(host_latency, "compare_latency", lambda a, b, inputs: (1.0, 1.0))


def quantization(result) -> dict:
    return result.manifest.facts.quantization.model_dump(mode="json")


def test_plain_int8_misses_the_gate_and_auto_recovers_with_one_float_layer(isolated_user_dirs, tmp_path, digits):
    model, data = outlier_input_model(tmp_path, digits)
    result = build(model, "raspberry-pi-4", data=data)  # fallback: auto is the default
    q = quantization(result)
    plain = q["attempts"][0]
    assert plain["strategy"] == "plain" and not plain["passed"] and plain["top1_agreement"] < 0.5
    assert result.passed and q["strategy"] == "int8 with 1 layer(s) in float"
    assert q["attempts"][-1]["float_layers"] == ["reads_input"]
    assert result.manifest.fidelity.top1_agreement >= 0.99
    assert q["layer_errors"][0]["layer"] == "reads_input" and q["layer_errors"][0]["error"] > 10
    dense = [layer for layer in q["layers"] if layer["op"] == "FULLY_CONNECTED"]
    assert [layer["precision"] for layer in dense if layer["layer"] == "reads_input"] == ["float32"]
    assert sorted(layer["precision"] for layer in dense) == ["float32", "int8", "int8", "int8"]
    assert len({layer["layer"] for layer in dense}) == 4  # each op named for its own Keras layer
    assert any("recovered with int8 with 1 layer(s) in float (kept in float: reads_input)" in n for n in result.manifest.notes)
    fp32 = build(model, write_target(isolated_user_dirs, "f32", "extends: raspberry-pi-4\nbuild: {precision: fp32}\n"), data=data)
    assert result.size_bytes < 0.5 * fp32.size_bytes


def test_fallback_off_fails_with_the_explain_table(isolated_user_dirs, tmp_path, digits):
    model, data = outlier_input_model(tmp_path, digits)
    write_target(isolated_user_dirs, "strict", "extends: raspberry-pi-4\nbuild: {fallback: off}\n")
    result = runner.invoke(app, ["build", str(model), "--target", "strict", "--data", str(data)])
    assert result.exit_code == 1, result.output
    assert "layers with the largest quantization error" in result.output
    table = result.output.split("layers with the largest quantization error")[1]
    assert table.index("reads_input") < table.index("dense")  # the culprit comes first
    assert "what was tried" not in result.output


def test_fp16_overflow_recovers_by_keeping_the_broken_layers_in_fp32(isolated_user_dirs, tmp_path, digits):
    model, data = fp16_overflow_model(tmp_path, digits)
    result = build(model, "pixel-8", data=data)
    q = quantization(result)
    assert q["attempts"][0]["top1_agreement"] < 0.5
    assert result.passed and q["strategy"].startswith("fp16 with")
    kept = q["attempts"][-1]["float_layers"]
    assert set(kept) == {"huge", "tiny"} and "head" not in kept
    fp32 = build(model, write_target(isolated_user_dirs, "f32", "extends: pixel-8\nbuild: {precision: fp32}\n"), data=data)
    assert result.size_bytes < fp32.size_bytes


def test_a_quantizer_exception_is_a_failed_attempt_not_a_crash(isolated_user_dirs, digits_files, monkeypatch):
    from edgepack.builder.convert import tflite

    def broken(*_args, **_kwargs):
        raise BuildError("TFLite conversion to int8 failed: the quantizer gave up")

    monkeypatch.setattr(tflite, "convert_tflite", broken)
    model, data = digits_files
    result = build(model, "raspberry-pi-4", data=data, use_cache=False)
    q = quantization(result)
    assert q["attempts"][0]["error"] == "TFLite conversion to int8 failed: the quantizer gave up"
    assert result.passed and q["strategy"] == "per-tensor weights"


def test_explain_prints_the_layer_table_for_a_passing_build(isolated_user_dirs, digits_files):
    model, data = digits_files
    result = runner.invoke(app, ["build", str(model), "--target", "raspberry-pi-4", "--data", str(data), "--explain", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert "layers with the largest quantization error" in result.output and "rmse/scale" in result.output
    assert "CONV_2D" in result.output


def test_onnx_int8_recovers_by_keeping_the_outlier_layer_in_float(isolated_user_dirs, tmp_path, digits):
    model, data = outlier_input_model(tmp_path, digits)
    result = build(model, "raspberry-pi-5-onnx", data=data)
    q = quantization(result)
    assert q["attempts"][0]["top1_agreement"] < 0.5
    assert result.passed and q["strategy"] == "int8 with 1 layer(s) in float"
    assert all("reads_input" in node for node in q["attempts"][-1]["float_layers"])
    assert "reads_input" in q["layer_errors"][0]["layer"] and q["layer_errors"][0]["measure"] == "SQNR drop dB"
    tried = [a["strategy"] for a in q["attempts"]]
    assert tried[:2] == ["plain", "int8 with 1 layer(s) in float"]  # the cheapest first


def test_onnx_fp16_keeps_the_node_whose_weights_pass_float16s_range_in_fp32_at_once(isolated_user_dirs, tmp_path, digits):
    # Weights past 65504 are found before converting (no recovery needed); an overflow of
    # activations, found only by running the model, is recovered in tests/builder/onnx/test_detector_builds.py.
    model, data = fp16_overflow_model(tmp_path, digits)
    result = build(model, "jetson-orin-nano", data=data)
    q = quantization(result)
    assert result.passed and q["strategy"] == "plain" and result.manifest.precision.value == "fp16"
    assert any("huge" in node for node in result.manifest.facts.fp16["fp32_nodes"])
    assert q["attempts"][0]["top1_agreement"] > 0.9


def test_an_onnx_quantizer_that_raises_on_the_per_channel_path_is_a_failed_attempt(isolated_user_dirs, digits_files, monkeypatch):
    from edgepack.builder.convert import onnx_quant

    real = onnx_quant.quantize_int8

    def per_channel_breaks(proto, profile, calibration, keep_float=(), wide_activations=False):
        if profile.build.onnx.per_channel:
            raise RuntimeError("Per-channel quantization of this graph failed")
        return real(proto, profile, calibration, keep_float, wide_activations)

    monkeypatch.setattr(onnx_quant, "quantize_int8", per_channel_breaks)
    model, data = digits_files
    result = build(model, "raspberry-pi-5-onnx", data=data, use_cache=False)
    q = quantization(result)
    assert "Per-channel quantization of this graph failed" in q["attempts"][0]["error"]
    assert result.passed and q["strategy"] == "per-tensor weights"


# --- dense outputs: a gate that sees every output, and the precision ladder -------------------


@pytest.fixture(scope="module")
def map_models(tmp_path_factory, digits):
    from tests.hard_models import sigmoid_map_model

    d = tmp_path_factory.mktemp("maps")
    return {"healthy": sigmoid_map_model(d, digits, break_fp16=False), "broken": sigmoid_map_model(d, digits, break_fp16=True)}


def test_a_broken_dense_map_is_never_packaged_as_ok(isolated_user_dirs, map_models):
    model, data = map_models["broken"]
    name = write_target(isolated_user_dirs, "phone-strict", "extends: pixel-8\nbuild: {fallback: off}\n")
    result = build(model, name, data=data)
    assert not result.passed and result.manifest.status.value == "failed"
    (out,) = result.manifest.fidelity.outputs
    assert out.kind == "dense" and not out.passed and out.sqnr_db < 5 and out.cosine < 0.9
    assert any(f.startswith("output_0 differs from the original's: SQNR") for f in result.failures)
    assert result.manifest.fidelity.top1_agreement is None  # no class scores: the old gate saw nothing


def test_a_healthy_int8_map_passes_the_default_dense_budget(isolated_user_dirs, map_models):
    model, data = map_models["healthy"]
    result = build(model, "raspberry-pi-4", data=data)
    (out,) = result.manifest.fidelity.outputs
    assert result.passed and result.manifest.precision.value == "int8"
    assert out.passed and out.sqnr_db > 30 and out.cosine > 0.999


def test_a_broken_fp16_map_recovers_with_its_overflowing_layers_in_fp32(isolated_user_dirs, map_models):
    model, data = map_models["broken"]
    result = build(model, "pixel-8", data=data)
    q = quantization(result)
    assert result.passed and q["strategy"].startswith("fp16 with") and result.manifest.precision.value == "fp16"
    assert q["attempts"][0]["failure"].startswith("output_0 differs")
    assert result.manifest.fidelity.outputs[0].sqnr_db >= 20
    assert any(n.startswith("plain fp16 missed the gate (output_0 differs") for n in result.manifest.notes)


def test_recovery_that_raises_is_an_attempt_and_the_ladder_goes_on(isolated_user_dirs, map_models, monkeypatch):
    import edgepack.builder.recover.tflite as tflite_recovery

    def exploding(*args, **kwargs):
        raise RuntimeError("The truth value of an array with more than one element is ambiguous")

    monkeypatch.setattr(tflite_recovery, "recover", exploding)
    model, data = map_models["broken"]
    result = build(model, "pixel-8", data=data)
    q = quantization(result)
    strategies = [a["strategy"] for a in q["attempts"]]
    assert strategies == ["plain", "layer fallback", "fp32 (precision ladder)"], strategies
    assert q["attempts"][1]["error"].startswith("RuntimeError: The truth value")
    assert result.passed and result.manifest.precision.value == "fp32"
    assert any("recovered with fp32 (precision ladder)" in n for n in result.manifest.notes)


def test_the_ladder_climbs_only_where_the_profile_allows(isolated_user_dirs, map_models, monkeypatch):
    import edgepack.builder.recover.tflite as tflite_recovery

    monkeypatch.setattr(tflite_recovery, "recover", lambda *a, **k: None)  # layer fallback finds nothing
    model, data = map_models["broken"]
    name = write_target(isolated_user_dirs, "phone-fp16-only", "extends: pixel-8\nbuild: {fallback: [fp16]}\n")
    result = build(model, name, data=data)
    assert not result.passed and [a["strategy"] for a in quantization(result)["attempts"]] == ["plain"]


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_an_integer_input_onnx_classifier_builds_int8_with_every_calibration_method(isolated_user_dirs, tmp_path, method):
    from tests.hard_models import integer_input_onnx_model

    model, data = integer_input_onnx_model(tmp_path)
    name = write_target(isolated_user_dirs, "ids", f"extends: raspberry-pi-5-onnx\nbuild: {{onnx: {{calibration_method: {method}}}}}\n")
    result = build(model, name, data=data)
    assert result.passed and result.manifest.fidelity.top1_agreement >= 0.99
    assert result.manifest.inputs[0].dtype == "int64" and result.manifest.precision.value == "int8"  # not climbed away


def test_a_calibrator_that_raises_is_an_attempt_and_recovery_goes_on(isolated_user_dirs, tmp_path, monkeypatch):
    from onnxruntime.quantization import calibrate

    from tests.hard_models import integer_input_onnx_model

    def ambiguous(self, *args, **kwargs):
        raise ValueError("The truth value of an array with more than one element is ambiguous. Use a.any() or a.all()")

    monkeypatch.setattr(calibrate.EntropyCalibrater, "compute_data", ambiguous)
    model, data = integer_input_onnx_model(tmp_path)
    name = write_target(isolated_user_dirs, "ids", "extends: raspberry-pi-5-onnx\nbuild: {onnx: {calibration_method: entropy}}\n")
    result = build(model, name, data=data)
    attempts = quantization(result)["attempts"]
    assert attempts[0]["strategy"] == "plain" and "truth value of an array" in attempts[0]["error"]
    assert result.passed, attempts  # another calibration, per-tensor weights or the ladder holds
    assert next(a for a in attempts if a["passed"])["strategy"] != "plain"


def test_int8_that_cannot_hold_out_of_domain_inputs_keeps_int8_weights_on_the_cpu_and_climbs_to_fp16_on_a_gpu(isolated_user_dirs, digits_files, digits):
    # Calibrated on digits, judged on brighter, noisy ones (up to 3x the calibrated range): int8
    # agrees on ~89% and keeping layers in float reaches ~99% at 3x the size. Float activations
    # hold any range: on the CPU int8 weights with float activations keep int8's size; with a GPU
    # delegate (which may not take int8 weights behind a DEQUANTIZE) fp16 holds at 100%.
    import numpy as np

    from edgepack.builder.recover.common import WEIGHT_ONLY

    model, _ = digits_files
    x, y = digits
    np.savez(isolated_user_dirs / "calib.npz", x=x[1200:1500], y=y[1200:1500])
    rng = np.random.default_rng(0)
    np.savez(isolated_user_dirs / "ood.npz", x=np.clip(x[1500:] * 2.5 + rng.normal(0, 0.3, x[1500:].shape), 0, 3).astype(np.float32))
    data = {"data": isolated_user_dirs / "calib.npz", "eval_data": isolated_user_dirs / "ood.npz"}
    off = write_target(isolated_user_dirs, "pi-off", "extends: raspberry-pi-4\nbuild: {fallback: off}\n")
    plain = build(model, off, **data)
    assert not plain.passed and plain.manifest.fidelity.top1_agreement < 0.95

    cpu = build(model, "raspberry-pi-4", **data)
    q = quantization(cpu)
    assert cpu.passed and cpu.manifest.precision.value == "int8" and q["strategy"] == WEIGHT_ONLY, q["attempts"]
    assert cpu.manifest.fidelity.top1_agreement >= 0.99
    assert any(a["strategy"].startswith("int8 with") for a in q["attempts"])  # layer fallback was tried first

    gpu = build(model, write_target(isolated_user_dirs, "pi-gpu", "extends: raspberry-pi-4\nruntime: {delegates: [gpu, xnnpack]}\n"), **data)
    q = quantization(gpu)
    assert gpu.passed and gpu.manifest.precision.value == "fp16" and q["strategy"] == "fp16 (precision ladder)"
    assert WEIGHT_ONLY not in [a["strategy"] for a in q["attempts"]]
    assert gpu.manifest.fidelity.top1_agreement >= 0.99
    assert any(n.startswith("plain int8 missed the gate (top-1 agreement") and "recovered with fp16 (precision ladder) at" in n for n in gpu.manifest.notes)


def test_a_loss_made_by_pruning_is_blamed_on_pruning_not_quantization(isolated_user_dirs, digits_files):
    # 95% of every kernel zeroed with no fine-tuning: the pruned float model itself is far off, so
    # keeping layers in float or climbing to fp16 cannot help, and recovery does not try.
    model, data = digits_files
    name = write_target(isolated_user_dirs, "pruned", "extends: raspberry-pi-4\nbuild: {prune: {sparsity: 0.95, fine_tune_epochs: 0}}\n")
    result = build(model, name, data=data)
    f = result.manifest.fidelity
    assert not result.passed and f.pruning is not None and not f.pruning.passed
    assert f.failures[0].startswith("pruning alone misses the gate (accuracy dropped")
    assert [a["strategy"] for a in quantization(result)["attempts"]] == ["plain"]
    assert any(n.startswith("accuracy: pruning -") and ", quantization " in n for n in result.manifest.notes)


def test_a_healthy_pruned_build_says_what_each_stage_cost(isolated_user_dirs, digits_files):
    model, data = digits_files
    name = write_target(isolated_user_dirs, "pruned", "extends: raspberry-pi-4\nbuild: {prune: {sparsity: 0.5}}\n")
    result = build(model, name, data=data)
    f = result.manifest.fidelity
    assert result.passed and f.pruning.passed and f.pruning.accuracy_drop is not None
    note = next(n for n in result.manifest.notes if n.startswith("accuracy: pruning"))
    assert f"pruning {-100 * f.pruning.accuracy_drop:+.2f} points" in note


def test_a_recovered_variant_slower_than_fp32_on_the_host_gives_way_to_fp32(isolated_user_dirs, map_models, monkeypatch):
    import edgepack.builder.host_latency as host_latency

    monkeypatch.setattr(host_latency, "compare_latency", lambda a, b, inputs: (2.0, 0.5))  # the variant, fp32: 4x slower
    model, data = map_models["broken"]
    cpu = write_target(isolated_user_dirs, "pi-fp16", "extends: raspberry-pi-4\nbuild: {precision: fp16}\n")
    result = build(model, cpu, data=data)
    assert result.passed and result.manifest.precision.value == "fp32" and result.manifest.build["precision_used"] == "fp32"
    assert quantization(result)["strategy"] == "fp32 (faster than the recovered variant)"
    assert any("ran 2.000 ms per sample on this host, fp32 0.500 ms: fp32 is handed over" in n for n in result.manifest.notes)
    # Where the profile does not let recovery reach fp32, the slower variant stays.
    name = write_target(isolated_user_dirs, "no-fp32", "extends: raspberry-pi-4\nbuild: {precision: fp16, fallback: [fp16]}\n")
    kept = build(model, name, data=data)
    assert kept.passed and kept.manifest.precision.value == "fp16" and quantization(kept)["strategy"].startswith("fp16 with")
    # A phone's GPU delegate is not the host's CPU: its timing says nothing there, and nothing changes.
    phone = build(model, "pixel-8", data=data)
    assert phone.manifest.precision.value == "fp16" and quantization(phone)["strategy"].startswith("fp16 with")


def test_a_conversion_that_raises_climbs_the_ladder_even_without_layer_fallback(isolated_user_dirs, digits_files, monkeypatch):
    import edgepack.builder.convert.tflite as tflite_export

    real = tflite_export.export_tflite

    def dynamic_range_breaks(model, profile, calibration):
        if profile.build.precision.value == "dynamic-int8":
            raise RuntimeError("FULLY_CONNECTED v12 is not supported")
        return real(model, profile, calibration)

    monkeypatch.setattr(tflite_export, "export_tflite", dynamic_range_breaks)
    model, data = digits_files
    name = write_target(isolated_user_dirs, "dyn", "extends: raspberry-pi-4\nbuild: {precision: dynamic-int8}\n")
    result = build(model, name, data=data)
    attempts = quantization(result)["attempts"]
    assert "FULLY_CONNECTED v12" in attempts[0]["error"] and result.passed and result.manifest.precision.value == "fp16"
