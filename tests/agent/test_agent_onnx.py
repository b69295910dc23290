"""The agent's ONNX side: node placement per provider, provider fallback, and the TensorRT engine
path through trtexec (its output parser against real trtexec text, and the agent flow with a
trtexec stand-in, since this machine has no GPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack.agent.protocol import parse_report
from edgepack.bundle import TensorSpec
from tests.agent.test_agent import AGENT, FAST, assert_measured, run_agent

FIXTURES = Path(__file__).parent / "fixtures"
FAKE_TRTEXEC = Path(__file__).parent / "fake_trtexec.py"


def agent_module():
    spec = importlib.util.spec_from_file_location("edgepack_agent_under_test", AGENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the trtexec parser, against real trtexec output --------------------------------------------


def test_parser_reads_trtexec_8_6_fp16_build_and_run():
    figures = agent_module().parse_trtexec((FIXTURES / "trtexec_8.6_orin_fp16.txt").read_text())

    assert figures["tensorrt_version"] == "8.6.2" and figures["passed"] is True
    assert figures["device"] == "Orin" and figures["precision"] == "FP32+FP16"
    assert figures["engine_build_s"] == pytest.approx(41.6395)
    assert figures["engine_load_ms"] == pytest.approx(13.1948)
    assert figures["throughput_qps"] == pytest.approx(8012.02)
    assert figures["latency_ms"] == {
        "min": 0.10376, "max": 0.851318, "mean": 0.118633, "median": 0.116699,
        "percentiles": {"90": 0.121338, "95": 0.124023, "99": 0.167969},
    }
    assert figures["gpu_compute_ms"]["median"] == pytest.approx(0.0805664)
    assert figures["enqueue_ms"]["percentiles"]["99"] == pytest.approx(0.0822754)
    assert figures["h2d_ms"]["mean"] == pytest.approx(0.0101932) and figures["d2h_ms"]["max"] == pytest.approx(0.0732422)
    assert (figures["warmup_queries"], figures["queries"], figures["trace_s"]) == (1566, 24037, pytest.approx(3.00012))
    assert figures["gpu_compute_total_s"] == pytest.approx(1.96578)
    assert figures["warnings"][0].startswith("GPU compute time is unstable")
    assert figures["errors"] == []  # the [W] [TRT] INT64 warning during parsing is not an error


def test_parser_reads_trtexec_10_int8_run_from_a_saved_engine():
    figures = agent_module().parse_trtexec((FIXTURES / "trtexec_10.3_orin_int8_load.txt").read_text())

    assert figures["tensorrt_version"] == "10.3.0"
    assert figures["engine_build_s"] is None  # loaded, not built
    assert figures["engine_load_ms"] == pytest.approx(20.7351)
    assert figures["throughput_qps"] == pytest.approx(7052.43)
    assert figures["latency_ms"]["percentiles"] == {"90": 0.143555, "95": 0.147217, "99": 0.18457}
    assert "Throughput may be bound by Enqueue Time" in figures["warnings"][0]


def test_parser_collects_the_errors_of_a_failed_build():
    figures = agent_module().parse_trtexec((FIXTURES / "trtexec_8.6_parse_failure.txt").read_text())

    assert figures["passed"] is False and figures["latency_ms"] is None
    assert figures["errors"][0].startswith("ModelImporter.cpp:771: While parsing node number 3 [Gelu")
    assert "Failed to parse onnx file" in figures["errors"]


def test_parser_reads_the_old_single_percentile_format_and_version_codes():
    agent = agent_module()
    figures = agent.parse_trtexec(
        "&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --loadEngine=m.engine\n"
        "[I] Latency: min = 1.5 ms, max = 3 ms, mean = 1.75 ms, median = 1.7 ms, percentile: 99% = 2.9 ms\n"
    )
    assert figures["tensorrt_version"] == "8.2.1"
    assert figures["latency_ms"]["percentiles"] == {"99": 2.9}
    assert agent.trt_version(100300) == "10.3.0" and agent.trt_version(8602) == "8.6.2"


# --- ONNX Runtime: where the nodes ran, and the fallback --------------------------------------


def test_onnx_report_says_which_provider_ran_each_kernel(onnx_bundle):
    proc, report = run_agent(onnx_bundle, "--providers", "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider")

    assert proc.returncode == 0
    assert_measured(report)
    placed = report.runtime.nodes_by_provider
    assert set(placed) == {"CPUExecutionProvider"}
    assert sum(placed["CPUExecutionProvider"].values()) >= 2  # MatMul + Add fused or not, then Softmax
    assert any(note.startswith("nodes_by_provider:") and "profiler" in note for note in report.notes)
    assert any("TensorrtExecutionProvider, CUDAExecutionProvider not available" in note for note in report.notes)


def test_dynamic_batch_is_timed_one_sample_at_a_time(onnx_bundle):
    _, report = run_agent(onnx_bundle)
    assert report.ok and report.check.n_samples == 32  # every reference sample checked, one call each


# --- TensorRT through trtexec -----------------------------------------------------------------


@pytest.fixture
def fake_trtexec(tmp_path):
    """A `trtexec` on PATH that runs the model with onnxruntime and prints real trtexec text."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "trtexec"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_TRTEXEC}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "trtexec.log"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_TRT_LOG=str(log))
    return env, log


@pytest.fixture
def specified_onnx_bundle(tmp_path, onnx_bundle, bundle_factory):
    """The softmax-regression bundle with its tensors named in the manifest (trtexec needs the names)."""
    reference = dict(np.load(onnx_bundle / "reference.npz"))
    content = (onnx_bundle / "model.onnx").read_bytes()

    def make(precision: str = "fp16"):
        bundle = bundle_factory(
            tmp_path / f"bundles/{precision}", "model.onnx", content, reference,
            [TensorSpec(name="x", shape=[None, 64], dtype="float32")], [TensorSpec(name="y", shape=[None, 10], dtype="float32")],
        )
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["precision"] = precision
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        return bundle

    return make


def run_tensorrt(bundle, env, *extra):
    proc = subprocess.run(
        [sys.executable, str(AGENT), str(bundle), "--engine", "tensorrt", *FAST, *extra],
        capture_output=True, text=True, timeout=300, env=env,
    )
    return proc, parse_report(proc.stdout)


def test_tensorrt_engine_is_built_once_cached_by_sha256_and_version_and_measured_by_trtexec(specified_onnx_bundle, fake_trtexec, tmp_path):
    env, log = fake_trtexec
    bundle = specified_onnx_bundle("fp16")
    cache = tmp_path / "engines"

    proc, first = run_tensorrt(bundle, env, "--cache-dir", str(cache))
    assert proc.returncode == 0, first.errors
    assert first.runtime.name == "tensorrt" and first.runtime.version == "8.6.2"
    t = first.tensorrt
    assert t.flags == ["--fp16"] and t.engine_cached is False and t.engine_build_s == pytest.approx(41.6395)
    sha = agent_module().sha256_file(str(bundle / "model.onnx"))
    assert Path(t.engine_path).parent == cache and Path(t.engine_path).name.startswith(f"{sha[:32]}-trt8.6.2-fp16")
    assert t.throughput_qps == pytest.approx(8012.02) and first.throughput_per_s == pytest.approx(8012.02)
    assert t.latency_ms.percentiles["99"] == pytest.approx(0.167969)
    assert len(first.latency_ms.samples) >= 20 and "exportTimes" in first.latency_ms.method
    assert first.load.in_process_ms == pytest.approx(13.1948) and len(first.load.cold_ms) == 2
    assert first.check.top1_agreement == 1.0 and first.check.max_abs_error < 1e-5
    assert any("checked 4 of 32 reference samples" in note for note in first.notes)

    proc, second = run_tensorrt(bundle, env, "--cache-dir", str(cache))
    assert proc.returncode == 0, second.errors
    assert second.tensorrt.engine_cached is True and second.tensorrt.engine_build_s is None
    builds = [line for line in log.read_text().splitlines() if line.startswith("--onnx=")]
    assert len(builds) == 1 and "--fp16" in builds[0]
    assert f"--timingCacheFile={cache / (sha[:32] + '-trt8.6.2.timing')}" in builds[0]
    assert any("taken from the cache" in note for note in second.notes)
    # Where load time goes: the build this bench did (the load the engine cache spares), then deserialising it.
    assert list(first.load.phases_ms) == ["engine_build", "engine_deserialize"]
    assert first.load.phases_ms["engine_build"] == pytest.approx(41639.5)
    assert list(second.load.phases_ms) == ["engine_deserialize"] and second.load.phases_ms["engine_deserialize"] > 0


def test_tensorrt_int8_builds_with_int8_and_fp16_flags(specified_onnx_bundle, fake_trtexec, tmp_path):
    env, log = fake_trtexec
    proc, report = run_tensorrt(specified_onnx_bundle("int8"), env, "--cache-dir", str(tmp_path / "c"))
    assert proc.returncode == 0, report.errors
    assert report.tensorrt.flags == ["--int8", "--fp16"]
    assert "--int8 --fp16" in next(line for line in log.read_text().splitlines() if line.startswith("--onnx="))


def test_tensorrt_refuses_dynamic_range_int8(specified_onnx_bundle, fake_trtexec):
    env, _ = fake_trtexec
    proc, report = run_tensorrt(specified_onnx_bundle("dynamic-int8"), env)
    assert proc.returncode == 1
    assert "TensorRT cannot run dynamic-range int8" in report.errors[0]


def test_tensorrt_build_failure_reports_trtexecs_own_error(tmp_path, fake_trtexec, bundle_factory, onnx_bundle):
    env, _ = fake_trtexec
    import onnx

    model = onnx.load(str(onnx_bundle / "model.onnx"))
    model.opset_import[0].version = 40  # the stand-in refuses what onnxruntime cannot load
    bundle = bundle_factory(
        tmp_path / "b", "model.onnx", model.SerializeToString(), dict(np.load(onnx_bundle / "reference.npz")),
        [TensorSpec(name="x", shape=[None, 64], dtype="float32")], [TensorSpec(name="y", shape=[None, 10], dtype="float32")],
    )
    proc, report = run_tensorrt(bundle, env)
    assert proc.returncode == 1
    assert "could not build an engine from model.onnx: ModelImporter.cpp:771" in report.errors[0]


def test_tensorrt_without_trtexec_measures_with_onnxruntime_and_says_so(specified_onnx_bundle, tmp_path):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin")
    proc, report = run_tensorrt(specified_onnx_bundle("fp16"), env)

    assert proc.returncode == 0, report.errors
    assert report.runtime.name == "onnxruntime" and report.runtime.providers == ["CPUExecutionProvider"]
    assert report.tensorrt is None
    assert any(note.startswith("trtexec not found") for note in report.notes)
    assert any("TensorrtExecutionProvider, CUDAExecutionProvider not available" in note for note in report.notes)


def test_profile_engine_tensorrt_is_used_without_engine_flag(specified_onnx_bundle, fake_trtexec):
    env, _ = fake_trtexec
    bundle = specified_onnx_bundle("fp16")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["profile"] = {"runtime": {"engine": "tensorrt"}}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = subprocess.run([sys.executable, str(AGENT), str(bundle), *FAST], capture_output=True, text=True, timeout=300, env=env)
    report = parse_report(proc.stdout)
    assert report.ok, report.errors
    assert report.runtime.name == "tensorrt"
