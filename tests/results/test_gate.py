"""The regression gate on real benches: `edgepack bench --baseline RUN --max-regression PCT` and its exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app
from edgepack.results.store import open_store

pytestmark = pytest.mark.slow
runner = CliRunner()
QUICK = ["--runs", "30", "--warmup", "2", "--min-seconds", "0", "--cold-loads", "1"]


def bench(bundle, db, *extra):
    return runner.invoke(app, ["bench", str(bundle), *QUICK, "--db", str(db), *extra])


def test_a_bench_within_the_limit_passes_the_gate(digits_bundles, tmp_path):
    # The baseline is the same bundle with a hand-made report far slower and bigger than any real
    # run here, so the new run is within the limit whatever else the machine is doing.
    from edgepack.bundle import bundle_sha256
    from edgepack.bundle import read_manifest
    from tests.results.conftest import agent_report

    db = tmp_path / "h.sqlite3"
    bundle = digits_bundles["int8"]
    with open_store(db) as history:
        slow = agent_report([1000.0, 1100.0, 1200.0], peak_mb=10_000.0, baseline_mb=9_000.0)
        history.add(device="local", manifest=read_manifest(bundle), report=slow, bundle_sha=bundle_sha256(bundle), bundle_path=str(bundle))
    result = bench(bundle, db, "--baseline", "#1", "--max-regression", "10%")
    assert result.exit_code == 0, result.output
    assert "regression gate: #2 (pi-int8 on local) against baseline #1" in result.output
    assert result.output.count("ok ✓") == 3 and "model size (KB)" in result.output and "+0.0%" in result.output


def test_a_model_that_grew_past_the_limit_exits_1_and_says_by_how_much(digits_bundles, tmp_path):
    db = tmp_path / "h.sqlite3"
    assert bench(digits_bundles["int8"], db).exit_code == 0
    result = bench(digits_bundles["fp32"], db, "--baseline", "#1", "--max-regression", "10%")
    assert result.exit_code == 1, result.output
    assert "regressed ✗" in result.output
    line = next(line for line in result.output.splitlines() if "model size (KB)" in line)
    assert "regressed ✗" in line and "+10%" in line
    assert "pi-fp32 on local: model size +" in result.output and "over baseline #1 (limit +10%)" in result.output
    with open_store(db) as history:
        assert history.count() == 2  # the regressed run is stored all the same


def test_the_gate_is_in_the_json_output(digits_bundles, tmp_path):
    db = tmp_path / "h.sqlite3"
    assert bench(digits_bundles["fp32"], db).exit_code == 0
    result = bench(digits_bundles["int8"], db, "--baseline", "#1", "--max-regression", "5", "--json")
    assert result.exit_code in (0, 1)  # a smaller model; latency and memory decide the rest
    data = json.loads(result.stdout)
    rows = {r["measure"]: r for r in data["regression"]}
    assert set(rows) == {"latency p90", "peak memory", "model size"}
    assert rows["model size"]["change"] < 0 and not rows["model size"]["regressed"] and rows["model size"]["limit"] == 0.05
    assert data["run_id"] == 2 and data["baseline"] == 1 and data["baseline_note"] == "baseline #1 is of target pi-fp32"


def test_gate_options_are_checked_before_measuring(digits_bundles, tmp_path):
    db = tmp_path / "h.sqlite3"
    result = bench(digits_bundles["fp32"], db, "--max-regression", "10%")
    assert result.exit_code == 2 and "--max-regression needs --baseline RUN" in result.output
    result = bench(digits_bundles["fp32"], db, "--baseline", "last")
    assert result.exit_code == 2 and "'last' names no run" in result.output
    result = bench(digits_bundles["fp32"], db, "--baseline", "last", "--max-regression", "lots")
    assert result.exit_code == 2 and "is not a percentage" in result.output
    with open_store(db) as history:
        assert history.count() == 0

