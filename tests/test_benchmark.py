"""`edgepack bench` and `edgepack deploy` on the built-in `local` device."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgepack.benchmark import BenchOptions, bench
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
    for row in ("load, cold", "first inference", "latency p90", "peak memory", "answers vs host", "throughput",
                "warm load by phase", "allocate tensors", "memory the load added", "first answer (plain)",
                "xnnpack-weight-cache phases", "create compiled model", "used by edgepack_runtime.load"):
        assert row in result.output, row
    assert "inference +" in result.output and "first answer: a fresh process, from `import edgepack_runtime`" in " ".join(result.output.split())
    data = json.loads(runner.invoke(app, ["bench", str(digits_bundles["int8"]), *QUICK, "--json"]).stdout)
    assert data["report"]["check"]["top1_agreement"] >= 0.875 and data["precision"] == "int8"


def test_second_bench_sends_nothing(digits_bundles):
    options = BenchOptions(runs=5, warmup=0, min_seconds=0, cold_loads=0)
    bench(digits_bundles["fp16"], "local", options)
    again = bench(digits_bundles["fp16"], "local", options)
    assert again.push.files_sent == 0 and again.push.bytes_sent == 0 and again.push.files_skipped == 5  # with the loader


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
    deployment = edgepack.deploy(model, "raspberry-pi-4", data=data, options=BenchOptions(runs=10, warmup=1, min_seconds=0, cold_loads=1))
    assert deployment.passed and deployment.failures == []
    (part,) = deployment.parts
    built, (measured,) = part.build, part.results
    assert built.passed and built.manifest.precision == "int8"
    assert measured.report.ok and measured.bundle == built.bundle and len(measured.report.latency_ms.samples) >= 10
    import edgepack.benchmark  # noqa: F401  importing the modules must not shadow the functions
    import edgepack.builder.pipeline  # noqa: F401
    import edgepack.deployment  # noqa: F401

    assert callable(edgepack.build) and callable(edgepack.bench) and callable(edgepack.deploy) and callable(edgepack.gate)
    assert edgepack.load_target("pixel-8").name == "pixel-8"


def copy_of(bundle, tmp_path):
    import shutil

    return shutil.copytree(bundle, tmp_path / bundle.name)


def test_a_model_swapped_after_the_build_is_refused_and_nothing_is_stored(digits_bundles, tmp_path):
    import shutil

    from edgepack.results.store import open_store

    bundle = copy_of(digits_bundles["int8"], tmp_path)
    shutil.copyfile(digits_bundles["fp16"] / "model.tflite", bundle / "model.tflite")
    db = tmp_path / "h.sqlite3"
    result = runner.invoke(app, ["bench", str(bundle), *QUICK, "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert "model.tflite does not match the manifest: it changed after the build" in " ".join(result.output.split())
    assert not db.exists() or open_store(db).count() == 0


def test_a_manifest_with_forged_hashes_is_refused(digits_bundles, tmp_path):
    bundle = copy_of(digits_bundles["int8"], tmp_path)
    doc = json.loads((bundle / "manifest.json").read_text())
    for f in doc["files"]:
        f["sha256"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(doc))
    result = runner.invoke(app, ["bench", str(bundle), *QUICK])
    assert result.exit_code == 2 and "does not match the manifest" in result.output and "Traceback" not in result.output


def test_a_failed_build_is_measured_only_when_asked_and_stored_as_failed(digits_bundles, tmp_path):
    from edgepack.results.store import open_store

    bundle = copy_of(digits_bundles["int8"], tmp_path)
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["status"] = "failed"
    doc["fidelity"]["failures"] = ["model is 46.0 KB, over the budget of 1 KB"]
    (bundle / "manifest.json").write_text(json.dumps(doc))
    db = tmp_path / "h.sqlite3"
    refused = runner.invoke(app, ["bench", str(bundle), *QUICK, "--db", str(db)])
    assert refused.exit_code == 2 and "its build missed its gate (model is 46.0 KB, over the budget of 1 KB)" in " ".join(refused.output.split())
    assert "--allow-failed" in refused.output
    measured = runner.invoke(app, ["bench", str(bundle), *QUICK, "--db", str(db), "--allow-failed"])
    assert measured.exit_code == 1, measured.output
    assert "the build missed its gate" in measured.output
    with open_store(db) as history:
        (run,) = history.runs()
        assert not run.passed and run.budget_failures[0].startswith("the build missed its gate")


def test_the_agent_checks_the_files_again_on_the_device(digits_bundles, tmp_path):
    import subprocess
    import sys

    from edgepack.benchmark import AGENT

    bundle = copy_of(digits_bundles["int8"], tmp_path)
    with open(bundle / "reference.npz", "ab") as f:
        f.write(b"tampered on the way")
    out = subprocess.run([sys.executable, str(AGENT), str(bundle), "--runs", "1", "--cold-loads", "0"], capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    assert report["ok"] is False
    assert any("reference.npz does not match the manifest" in e for e in report["errors"]), report["errors"]


def test_a_bundle_from_before_the_loader_still_benches_and_a_changed_loader_is_refused(digits_bundles, tmp_path):
    old = copy_of(digits_bundles["fp16"], tmp_path / "old")
    (old / "edgepack_runtime.py").unlink()
    doc = json.loads((old / "manifest.json").read_text())
    doc["files"] = [f for f in doc["files"] if f["path"] != "edgepack_runtime.py"]
    (old / "manifest.json").write_text(json.dumps(doc))

    result = bench(old, "local", BenchOptions(runs=5, warmup=0, min_seconds=0, cold_loads=1))

    assert result.report.ok and result.report.load.first_answer is not None  # the loader went along with the agent
    assert not (old / "edgepack_runtime.py").exists()

    changed = copy_of(digits_bundles["fp16"], tmp_path / "changed")
    with open(changed / "edgepack_runtime.py", "a") as f:
        f.write("\nprint('hello')\n")
    refused = runner.invoke(app, ["bench", str(changed), *QUICK])
    assert refused.exit_code == 2 and "edgepack_runtime.py does not match the manifest" in " ".join(refused.output.split())


def test_profile_load_cache_off_reaches_the_agent(digits_bundles):
    from edgepack.benchmark import agent_argv
    from edgepack.bundle import read_manifest
    from edgepack.profile.schema import LoadCache

    manifest = read_manifest(digits_bundles["fp32"])
    assert agent_argv("python", "agent.py", "b", manifest, BenchOptions())[-2:] == ["--load-cache", "auto"]
    runtime = manifest.profile.runtime.model_copy(update={"load_cache": LoadCache.off})
    off = manifest.model_copy(update={"profile": manifest.profile.model_copy(update={"runtime": runtime})})
    assert agent_argv("python", "agent.py", "b", off, BenchOptions())[-2:] == ["--load-cache", "off"]


def agents_running(marker: str) -> list[int]:
    from pathlib import Path

    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "edgepack_agent.py" in cmdline and marker in cmdline:
            pids.append(int(proc.name))
    return pids


def test_a_killed_bench_leaves_no_agent_running(digits_bundles, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    bundle = copy_of(digits_bundles["fp32"], tmp_path)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))  # the local device's workdir: ours alone
    host = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "bench", str(bundle), "--min-seconds", "60", "--cold-loads", "0", "--db", str(tmp_path / "h.sqlite3")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    marker = str(tmp_path / "cache")
    deadline = time.monotonic() + 60
    while not agents_running(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert agents_running(marker), "the agent never started"
    host.send_signal(signal.SIGKILL)
    host.wait()
    deadline = time.monotonic() + 10
    while agents_running(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert agents_running(marker) == []


def test_an_unwritable_bench_report_keeps_the_stored_run_and_the_table(digits_bundles, tmp_path, monkeypatch):
    import edgepack.benchmark as benchmark
    from edgepack.results.store import open_store

    def refused(path, text, exclusive=False):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(benchmark, "write_atomic", refused)
    db = tmp_path / "h.sqlite3"
    result = runner.invoke(app, ["bench", str(digits_bundles["int8"]), *QUICK, "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert "latency p90" in result.output  # the measurement is shown
    assert "cannot write the bench report" in result.output and "Permission denied" in result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    with open_store(db) as history:
        assert history.count() == 1  # and stored before the write failed


def test_an_unwritable_html_report_is_one_line(tmp_path):
    from edgepack.results.store import open_store
    from tests.results.conftest import add_run

    with open_store(tmp_path / "h.sqlite3") as history:
        add_run(history)
    result = runner.invoke(app, ["report", "--db", str(tmp_path / "h.sqlite3"), "--html", "/sys/edgepack-report/r.html"])
    assert result.exit_code == 2, result.output
    assert "cannot write the report /sys/edgepack-report/r.html" in " ".join(result.output.split())
    assert "Traceback" not in result.output and "internal error" not in result.output
