"""`edgepack bench` on the local device sees inside it: per-operator times (or a line saying there are none), the
build's gate applied to the device's answers, and sustained load against a fake sysfs tree."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from edgepack.benchmark import BenchOptions, bench
from edgepack.cli.app import app
from tests.ondevice.test_thermal import fake_sysfs

pytestmark = pytest.mark.slow
runner = CliRunner()
QUICK = ["--runs", "20", "--warmup", "2", "--min-seconds", "0", "--cold-loads", "0"]


def test_a_tflite_bench_applies_the_builds_gate_and_says_it_has_no_per_operator_times(digits_bundles):
    result = runner.invoke(app, ["bench", str(digits_bundles["fp32"]), *QUICK])
    assert result.exit_code == 0, result.output
    assert "answers vs build's gate" in result.output and "passes" in result.output
    assert "no per-operator times" in result.output
    data = json.loads(runner.invoke(app, ["bench", str(digits_bundles["fp32"]), *QUICK, "--json"]).stdout)
    check = data["report"]["check"]
    assert check["passed"] is True and check["outputs"][0]["kind"] == "classes" and "SQNR" in check["gate"]
    assert data["report"]["protocol"] == 2 and data["report"]["operators"]["source"] is None


def test_answers_that_miss_the_builds_gate_on_the_device_fail_the_bench(digits_bundles, tmp_path):
    bundle = tmp_path / "strict"
    shutil.copytree(digits_bundles["fp16"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["fidelity"]["outputs"][0]["kind"] = "dense"  # judged as a dense map, where fp16 cannot reach 200 dB
    manifest["profile"]["verify"]["min_sqnr_db"] = 149.0
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["bench", str(bundle), *QUICK])
    assert result.exit_code == 1, result.output
    assert "on the device:" in result.output and "SQNR" in result.output and "budget 149" in result.output


def test_a_timeout_shorter_than_the_sustained_run_is_refused_before_measuring(digits_bundles):
    result = runner.invoke(app, ["bench", str(digits_bundles["fp32"]), *QUICK, "--timeout", "30", "--sustained", "1m"])
    assert result.exit_code == 2, result.output
    assert "--timeout 30 s ends the agent before the 60 s --sustained run is over" in result.output
    assert "Traceback" not in result.output and "answers vs" not in result.output  # nothing measured


def test_an_onnx_bench_times_each_operator_and_a_sustained_run_reads_the_sysfs_tree(digits_files, isolated_user_dirs, tmp_path):
    from edgepack.builder.pipeline import build
    from tests.conftest import write_target

    model, data = digits_files
    write_target(isolated_user_dirs, "pi5-onnx", "extends: raspberry-pi-5-onnx\nbuild: {precision: fp32}\n")
    built = build(model, "pi5-onnx", data=data, out=tmp_path / "onnx", use_cache=False)
    result = bench(built.bundle, "local", BenchOptions(runs=20, warmup=2, min_seconds=0, cold_loads=0), db=tmp_path / "h.sqlite3")
    ops = result.report.operators
    assert ops.source == "onnxruntime-profiler" and ops.nodes and set(ops.by_provider) == {"CPUExecutionProvider"}
    assert {g.op_type for g in ops.by_op_type} >= {"Conv"} and abs(sum(n.share for n in ops.nodes) - 1) < 1e-3
    assert result.report.check.passed is True and result.report.memory.gpu is None  # nothing ran on a GPU

    from edgepack.ondevice import cli as agent_cli

    fake_sysfs(tmp_path / "sys-root", {"cpu-thermal": 48000}, [1200000])
    args = agent_cli.parse_args([str(built.bundle), "--runs", "5", "--warmup", "0", "--min-seconds", "0", "--cold-loads", "0",
                                 "--load-cache", "off", "--sustained", "0.6", "--sustained-interval", "0.2", "--sysfs-root", str(tmp_path / "sys-root")])
    report = agent_cli.empty_report()
    from edgepack.ondevice.measure import measure

    measure(args, report)
    sustained = report["sustained"]
    assert len(sustained["intervals"]) >= 2 and sustained["intervals"][0]["temp_c"] == 48.0 and sustained["intervals"][0]["freq_mhz"] == 1200.0
