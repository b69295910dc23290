"""The device agent, run as the host runs it: a separate process, one JSON report on stdout."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
import pytest

from edgepack.agent.assemble import agent_file
from edgepack.agent.protocol import PROTOCOL_VERSION, AgentReport, parse_report
from edgepack.errors import DeviceError

AGENT = agent_file()  # the file pushed to devices, assembled from edgepack/ondevice/
FAST = ["--runs", "20", "--warmup", "2", "--min-seconds", "0", "--cold-loads", "2"]


def run_agent(bundle, *extra: str) -> tuple[subprocess.CompletedProcess, AgentReport]:
    proc = subprocess.run(
        [sys.executable, str(AGENT), str(bundle), *FAST, *extra], capture_output=True, text=True, timeout=120
    )
    return proc, parse_report(proc.stdout)


def assert_measured(report: AgentReport, runs: int = 20, loads: int = 2) -> None:
    assert report.ok, report.errors
    lat = report.latency_ms
    assert len(lat.samples) >= runs and lat.runs == len(lat.samples)
    assert lat.min <= lat.p50 <= lat.p90 <= lat.p99 <= lat.max
    assert report.throughput_per_s == pytest.approx(1000.0 / lat.mean)
    assert len(report.load.cold_ms) == loads and len(report.load.warm_ms) == loads
    assert all(ms > 0 for ms in report.load.cold_ms + report.load.warm_ms)
    assert report.load.in_process_ms > 0 and report.first_inference_ms > 0
    assert report.memory.peak_rss_mb >= report.memory.baseline_rss_mb
    assert "VmHWM" in report.memory.method or "ru_maxrss" in report.memory.method
    assert report.system.python and report.system.cores >= 1


def test_agent_parses_as_python_38_and_imports_no_edgepack():
    tree = ast.parse(AGENT.read_text(), feature_version=(3, 8))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert not [m for m in imported if m == "edgepack" or m.startswith("edgepack.")]


@pytest.mark.slow
def test_fp32_tflite_report_validates_and_matches_reference(tflite_bundles):
    proc, report = run_agent(tflite_bundles["fp32"])

    assert proc.returncode == 0
    assert report.protocol == PROTOCOL_VERSION
    assert_measured(report)
    assert report.runtime.name in ("ai_edge_litert", "tflite_runtime", "tensorflow.lite")
    assert report.runtime.delegates == ["xnnpack"]
    assert any("xnnpack" in note and "default" in note for note in report.notes)
    assert report.check.n_samples == 32
    assert report.check.top1_agreement == 1.0
    assert report.check.max_abs_error < 1e-4


@pytest.mark.slow
def test_int8_tflite_check_quantizes_inputs_and_dequantizes_outputs(tflite_bundles):
    proc, report = run_agent(tflite_bundles["int8"])

    assert proc.returncode == 0
    assert_measured(report)
    assert report.check.n_samples == 32
    assert report.check.top1_agreement >= 0.9
    assert report.check.max_abs_error < 0.1  # softmax probabilities; int8 output steps are 1/256


@pytest.mark.slow
def test_tflite_gpu_delegate_missing_runs_on_cpu_with_note(tflite_bundles):
    proc, report = run_agent(tflite_bundles["fp32"], "--delegates", "gpu", "--threads", "1")

    assert proc.returncode == 0 and report.ok
    assert report.runtime.threads == 1
    if "gpu" not in report.runtime.delegates:
        assert any(note.startswith("gpu delegate not available:") and "ran on CPU" in note for note in report.notes)


def test_onnx_cuda_request_falls_back_to_cpu_with_note(onnx_bundle):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: there is no fallback to see")
    proc, report = run_agent(onnx_bundle, "--providers", "CUDAExecutionProvider,CPUExecutionProvider")

    assert proc.returncode == 0
    assert_measured(report)
    assert report.runtime.name == "onnxruntime"
    assert report.runtime.providers == ["CPUExecutionProvider"]
    assert any("CUDAExecutionProvider" in note and "not available" in note for note in report.notes)
    assert report.check.top1_agreement == 1.0
    assert report.check.max_abs_error < 1e-5


def test_min_seconds_keeps_timing_past_the_requested_runs(onnx_bundle):
    proc = subprocess.run(
        [sys.executable, str(AGENT), str(onnx_bundle), "--runs", "1", "--warmup", "0", "--min-seconds", "0.3",
         "--cold-loads", "0"],
        capture_output=True, text=True, timeout=120,
    )
    report = parse_report(proc.stdout)

    assert report.ok, report.errors
    assert report.latency_ms.runs > 1
    assert report.load.cold_ms == [] and len(report.load.warm_ms) == 1  # at least one warm load
    assert report.load.cold_evicted is None


@pytest.mark.parametrize("artifact", ["model.tflite", "model.onnx"])
def test_corrupt_model_reports_ok_false_with_reason(tmp_path, onnx_bundle, bundle_factory, artifact):
    reference = dict(np.load(onnx_bundle / "reference.npz"))
    bundle = bundle_factory(tmp_path / "bad", artifact, b"this is not a model" * 8, reference)

    proc, report = run_agent(bundle)

    assert proc.returncode == 1
    assert json.loads(proc.stdout) == report.model_dump(mode="json")  # stdout is that one document
    assert not report.ok
    assert len(report.errors) == 1 and "rejected " + artifact in report.errors[0]
    assert report.latency_ms is None


def test_missing_bundle_reports_ok_false(tmp_path):
    proc, report = run_agent(tmp_path / "nowhere")

    assert proc.returncode == 1
    assert not report.ok
    assert "no such bundle directory" in report.errors[0]


def test_bad_arguments_report_ok_false(onnx_bundle):
    proc, report = run_agent(onnx_bundle, "--runs", "many")

    assert proc.returncode == 1
    assert not report.ok and report.errors[0].startswith("bad arguments:")


def test_engine_that_cannot_load_the_artifact_is_refused(onnx_bundle):
    proc, report = run_agent(onnx_bundle, "--engine", "tflite")

    assert proc.returncode == 1
    assert "--engine tflite cannot load a .onnx artifact" in report.errors[0]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "printed nothing"),
        ('{"protocol": 1, "ok": false, "errors": ["x"]}\n{"protocol": 1}', "not one JSON document"),
        ("INFO: Created delegate\n{}", "not one JSON document"),
        ("[1, 2]", "not an object"),
        ('{"protocol": 99, "ok": false, "errors": ["x"]}', "protocol 99"),
        ('{"protocol": 1, "ok": false, "errors": ["x"], "surprise": 1}', "surprise"),
        ('{"protocol": 1, "ok": false, "errors": []}', "no error says why"),
        ('{"protocol": 1, "ok": true, "errors": []}', "missing"),
    ],
)
def test_parse_report_rejects_what_is_not_one_valid_report(text, problem):
    with pytest.raises(DeviceError) as err:
        parse_report(text)
    assert problem in err.value.message
    assert err.value.hint


def test_parse_report_accepts_a_failure_report_without_measurements():
    report = parse_report('{"protocol": 1, "ok": false, "errors": ["no TFLite runtime importable"]}')

    assert not report.ok and report.latency_ms is None and report.check is None


def test_reference_that_does_not_fit_the_model_fails_the_check_but_keeps_timings(tmp_path, onnx_bundle, bundle_factory):
    model = (onnx_bundle / "model.onnx").read_bytes()
    reference = {"in_0": np.zeros((4, 32), np.float32), "out_0": np.zeros((4, 10), np.float32)}
    bundle = bundle_factory(tmp_path / "misfit", "model.onnx", model, reference)

    proc, report = run_agent(bundle)

    assert proc.returncode == 1 and not report.ok
    assert report.errors == ["reference check failed: reference in_0 has shape [4, 32]; the model takes [None, 64]"]
    assert report.check is None and report.latency_ms.runs >= 20
