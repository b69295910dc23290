"""ONNX bundles measured on the SSH test device: its own Python with numpy<2 and onnxruntime, no
TensorFlow, no edgepack. The CPU provider runs them; a Jetson profile's provider list (TensorRT,
CUDA, CPU) falls back to the CPU with a note; `engine: tensorrt` goes through trtexec (a stand-in
that runs onnxruntime, since there is no GPU here)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edgepack.agent.protocol import parse_report
from edgepack.benchmark import AGENT, BenchOptions, bench
from edgepack.bundle import MANIFEST, read_manifest
from edgepack.device.connect import open_transport

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST = BenchOptions(runs=20, warmup=2, min_seconds=0, cold_loads=1)
FAKE_TRTEXEC = Path(__file__).resolve().parents[1] / "agent" / "fake_trtexec.py"


@pytest.fixture(scope="module")
def onnx_bundles(tmp_path_factory, digits_files):
    """The digits CNN built by edgepack for ONNX targets: {"fp32": bundle, "fp16-jetson": ..., "int8": ...}."""
    from edgepack.builder.pipeline import build
    from edgepack.profile.store import Catalog, SearchDir, builtin_dir

    model, data = digits_files
    root = tmp_path_factory.mktemp("onnx-bundles")
    targets = root / "targets"
    targets.mkdir()
    (targets / "pi5-onnx-fp32.yaml").write_text("extends: raspberry-pi-5-onnx\nbuild: {precision: fp32}\n")
    catalog = Catalog([SearchDir("project", targets), SearchDir("builtin", builtin_dir())])
    bundles = {}
    for key, target in (("fp32", "pi5-onnx-fp32"), ("fp16-jetson", "jetson-orin-nano"), ("int8", "raspberry-pi-5-onnx")):
        result = build(model, target, data=data, out=root / key, use_cache=False, catalog=catalog)
        assert result.passed, result.failures
        bundles[key] = result.bundle
    return bundles


@pytest.mark.parametrize("key", ["fp32", "int8"])
def test_onnx_bundle_runs_on_the_device_cpu_provider(ssh_device, onnx_bundles, key):
    result = bench(onnx_bundles[key], "sshdev", FAST, inventory=ssh_device.inventory, store=False)
    report = result.report

    assert report.ok, report.errors
    assert report.runtime.name == "onnxruntime" and report.runtime.providers == ["CPUExecutionProvider"]
    assert report.system.python and report.latency_ms.runs >= 20
    assert report.check.top1_agreement == 1.0
    kernels = report.runtime.nodes_by_provider["CPUExecutionProvider"]
    if key == "int8":  # the QDQ pairs were fused into int8 kernels on the device
        assert "QLinearConv" in kernels and report.check.max_abs_error < 0.1
    else:
        assert "Conv" in kernels or "FusedConv" in kernels
        assert report.check.max_abs_error < 1e-4


def test_jetson_bundle_falls_back_from_tensorrt_and_cuda_to_cpu_with_a_note(ssh_device, onnx_bundles):
    manifest = read_manifest(onnx_bundles["fp16-jetson"])
    assert manifest.profile.runtime.providers[0] == "TensorrtExecutionProvider"

    result = bench(onnx_bundles["fp16-jetson"], "sshdev", FAST, inventory=ssh_device.inventory, store=False)
    report = result.report

    assert report.ok, report.errors
    assert report.runtime.providers == ["CPUExecutionProvider"]
    assert set(report.runtime.nodes_by_provider) == {"CPUExecutionProvider"}
    assert any(
        "TensorrtExecutionProvider, CUDAExecutionProvider not available" in note and "ran on CPUExecutionProvider" in note
        for note in report.notes
    ), report.notes
    assert report.check.top1_agreement == 1.0 and report.check.max_abs_error < 1e-2


def test_tensorrt_engine_through_trtexec_on_the_device_is_cached_in_the_workdir(ssh_device, onnx_bundles, device_python, tmp_path):
    bundle = onnx_bundles["fp16-jetson"]
    fake = tmp_path / "bin" / "trtexec"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nexec "{device_python}" "{FAKE_TRTEXEC}" "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    files = {f.path: bundle / f.path for f in read_manifest(bundle).files}
    files[MANIFEST] = bundle / MANIFEST
    files["edgepack_agent.py"] = AGENT

    reports = []
    with open_transport(ssh_device.device) as t:
        t.push(files, "bundle-trt")
        argv = [
            "env", f"PATH={fake.parent}:/usr/bin:/bin", t.python, t.remote_path("bundle-trt", "edgepack_agent.py"),
            t.remote_path("bundle-trt"), "--engine", "tensorrt", "--runs", "20", "--warmup", "2", "--min-seconds", "0", "--cold-loads", "1",
        ]
        for _ in range(2):
            run = t.run(argv, timeout=300)
            reports.append(parse_report(run.stdout))
        cache = Path(t.remote_path("engine-cache"))

    first, second = reports
    assert first.ok, first.errors
    assert first.runtime.name == "tensorrt" and first.tensorrt.flags == ["--fp16"]
    assert Path(first.tensorrt.engine_path).parent == cache  # <workdir>/engine-cache
    assert first.tensorrt.engine_cached is False and second.tensorrt.engine_cached is True
    assert first.check.top1_agreement == 1.0
    assert [p.name for p in cache.iterdir()] == [Path(first.tensorrt.engine_path).name]
