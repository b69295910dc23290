"""`edgepack.deploy` and `edgepack.gate` (the API) agree with `edgepack deploy` (the CLI) on what failed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import edgepack
from edgepack.benchmark import BenchOptions
from edgepack.cli.app import app
from edgepack.errors import GateFailed
from tests.conftest import write_target

pytestmark = pytest.mark.slow
runner = CliRunner()
QUICK = ["--runs", "10", "--warmup", "1", "--min-seconds", "0", "--cold-loads", "1"]
OPTIONS = BenchOptions(runs=10, warmup=1, min_seconds=0, cold_loads=1)


def test_a_build_that_misses_its_gate_fails_the_same_way_in_the_api_and_the_cli(isolated_user_dirs, digits_files, tmp_path):
    model, data = digits_files
    write_target(isolated_user_dirs, "tiny", "extends: raspberry-pi-4\nbudgets: {max_model_kb: 1}\n")
    write_target(isolated_user_dirs, "roomy", "extends: raspberry-pi-4\n")
    deployment = edgepack.deploy(model, ["tiny", "roomy"], data=data, options=OPTIONS, db=tmp_path / "h.sqlite3")
    assert not deployment.passed
    tiny, roomy = deployment.parts
    assert tiny.runs == [] and tiny.skipped and not tiny.build.passed
    assert len(roomy.results) == 1 and roomy.results[0].report.ok  # the other target is still measured
    (failure,) = deployment.failures
    assert failure.startswith("build for tiny missed its budget: ")
    with pytest.raises(GateFailed) as raised:
        deployment.raise_for_failures()
    assert raised.value.message == failure and raised.value.exit_code == 1

    result = runner.invoke(app, ["deploy", str(model), "-t", "tiny", "-t", "roomy", "--data", str(data), *QUICK, "--db", str(tmp_path / "c.sqlite3")])
    assert result.exit_code == 1, result.output
    assert failure.split(": ")[0] in result.output and "nothing was measured" in result.output
    assert "Traceback" not in result.output


def test_a_regression_fails_the_same_way_in_the_api_and_the_cli(isolated_user_dirs, digits_files, tmp_path):
    model, data = digits_files
    db = tmp_path / "h.sqlite3"
    write_target(isolated_user_dirs, "small", "extends: raspberry-pi-4\nbuild: {precision: int8}\n")
    write_target(isolated_user_dirs, "big", "extends: raspberry-pi-4\nbuild: {precision: fp32}\n")
    assert edgepack.deploy(model, "small", data=data, options=OPTIONS, db=db).passed
    deployment = edgepack.deploy(model, "big", data=data, options=OPTIONS, db=db, baseline="#1", max_regression="10%")
    assert not deployment.passed and deployment.gate is not None and not deployment.gate.passed
    size = [f for f in deployment.failures if "model size" in f]
    assert len(size) == 1 and size[0].startswith("big on local: model size +") and "over baseline #1 (limit +10%)" in size[0]

    # The same gate over the stored runs, after the fact.
    report = edgepack.gate(["last"], baseline="#1", max_regression="10%", db=db)
    assert report.failures == deployment.gate.failures

    result = runner.invoke(app, ["deploy", str(model), "-t", "big", "--data", str(data), *QUICK, "--db", str(db), "--baseline", "#1", "--max-regression", "10%"])
    assert result.exit_code == 1, result.output
    assert "big on local: model size +" in result.output and "regressed ✗" in result.output


def test_a_threshold_without_a_baseline_is_refused_before_anything_is_built(isolated_user_dirs, digits_files):
    from edgepack.errors import EdgepackError

    model, data = digits_files
    with pytest.raises(EdgepackError, match="--max-regression needs --baseline RUN"):
        edgepack.deploy(model, "raspberry-pi-4", data=data, max_regression="10%")
    assert not (isolated_user_dirs / "build").exists()
