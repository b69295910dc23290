"""`edgepack bench` and `edgepack deploy` on the built-in `local` device."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgepack.bench import BenchOptions, bench
from edgepack.cli.app import app
from tests.conftest import write_target

pytestmark = pytest.mark.slow
runner = CliRunner()
QUICK = ["--runs", "30", "--warmup", "2", "--min-seconds", "0", "--cold-loads", "2"]


def test_bench_measures_on_the_local_device(digits_bundles):
    result = bench(digits_bundles["fp32"], "local", BenchOptions(runs=30, warmup=2, min_seconds=0, cold_loads=2))
    r = result.report
    assert r.ok and r.runtime.name == "ai_edge_litert"
    assert len(r.latency_ms.samples) >= 30 and r.latency_ms.p50 <= r.latency_ms.p90 <= r.latency_ms.p99
    assert len(r.load.cold_ms) == 2 and r.load.warm_ms
    assert r.memory.peak_rss_mb >= r.memory.baseline_rss_mb
    assert r.check.top1_agreement == 1.0 and r.check.max_abs_error < 1e-4
    saved = json.loads(result.report_path.read_text())
    assert result.report_path.parent == digits_bundles["fp32"].parent
    assert saved["report"]["latency_ms"]["p90"] == r.latency_ms.p90 and saved["device"] == "local"


def test_bench_cli_prints_the_table_and_the_int8_check(digits_bundles):
    result = runner.invoke(app, ["bench", str(digits_bundles["int8"]), *QUICK])
    assert result.exit_code == 0, result.output
    for row in ("load, cold", "first inference", "latency p90", "peak memory", "answers vs host", "throughput"):
        assert row in result.output
    data = json.loads(runner.invoke(app, ["bench", str(digits_bundles["int8"]), *QUICK, "--json"]).stdout)
    assert data["report"]["check"]["top1_agreement"] >= 0.875 and data["precision"] == "int8"


def test_second_bench_sends_nothing(digits_bundles):
    options = BenchOptions(runs=5, warmup=0, min_seconds=0, cold_loads=0)
    bench(digits_bundles["fp16"], "local", options)
    again = bench(digits_bundles["fp16"], "local", options)
    assert again.push.files_sent == 0 and again.push.bytes_sent == 0 and again.push.files_skipped == 4


def test_budget_miss_exits_1_and_marks_the_row(isolated_user_dirs, digits_files):
    model, data = digits_files
    write_target(isolated_user_dirs, "strict", "extends: raspberry-pi-4\nbuild: {precision: fp32}\nbudgets: {max_p90_latency_ms: 0.000001, max_peak_memory_mb: 1}\n")
    result = runner.invoke(app, ["deploy", str(model), "--target", "strict", "--data", str(data), *QUICK])
    assert result.exit_code == 1, result.output
    assert "✗" in result.output
    assert "p90 latency" in result.output and "over the budget of 1e-06 ms" in result.output
    assert "peak memory" in result.output and "over the budget of 1 MB" in result.output


def test_deploy_two_targets_prints_them_side_by_side(isolated_user_dirs, digits_files):
    model, data = digits_files
    result = runner.invoke(app, ["deploy", str(model), "-t", "raspberry-pi-4", "-t", "pixel-8", "--data", str(data), *QUICK])
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("side by side"):].splitlines()
    header = [[cell.strip() for cell in line.strip("┃").split("┃")] for line in table if line.startswith("┃")]
    assert [cells[1:] for cells in header] == [["raspberry-pi-4", "pixel-8"], ["int8", "fp16"]]
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("│").split("│")] for line in table if line.startswith("│"))}
    for measure in ("model KB", "latency p50 ms", "latency p90 ms", "peak MB"):
        assert len(rows[measure]) == 2 and all(float(value) >= 0 for value in rows[measure]), (measure, rows)
    assert all(float(value) > 0 for value in rows["model KB"] + rows["peak MB"])
    assert rows["model KB"][0] != rows["model KB"][1]  # int8 and fp16 artifacts differ in size
    assert (isolated_user_dirs / "build" / "cnn-pixel-8.local.bench.json").is_file()


def test_deploy_without_a_target_says_how_to_give_one(digits_files):
    model, data = digits_files
    result = runner.invoke(app, ["deploy", str(model), "--data", str(data)])
    assert result.exit_code == 2 and "no target given and device 'local' has none" in result.output
    assert "Traceback" not in result.output


def test_bench_of_a_directory_that_is_not_a_bundle(isolated_user_dirs):
    (isolated_user_dirs / "empty").mkdir()
    result = runner.invoke(app, ["bench", "empty"])
    assert result.exit_code == 2 and "not a bundle (no manifest.json)" in result.output
    result = runner.invoke(app, ["bench", "missing"])
    assert result.exit_code == 2 and "no such bundle directory" in result.output


def test_bench_on_an_unknown_device_suggests_names(digits_bundles, tmp_path):
    inventory = tmp_path / "devices.yaml"
    assert runner.invoke(app, ["devices", "add", "pi-kitchen", "--host", "127.0.0.1", "--inventory", str(inventory)]).exit_code == 0
    result = runner.invoke(app, ["bench", str(digits_bundles["fp32"]), "--device", "pi-kitchn", "--inventory", str(inventory)])
    assert result.exit_code == 2 and "pi-kitchen" in result.output and "Traceback" not in result.output


def test_the_public_api_builds_and_measures(isolated_user_dirs, digits_files):
    import edgepack

    model, data = digits_files
    built, measured = edgepack.deploy(model, "raspberry-pi-4", data=data, options=BenchOptions(runs=10, warmup=1, min_seconds=0, cold_loads=1))
    assert built.passed and built.manifest.precision == "int8"
    assert measured.report.ok and measured.bundle == built.bundle and len(measured.report.latency_ms.samples) >= 10
    import edgepack.bench  # noqa: F401  the submodules share the functions' names
    import edgepack.build.pipeline  # noqa: F401

    assert callable(edgepack.build) and callable(edgepack.bench) and edgepack.load_target("pixel-8").name == "pixel-8"
