"""The plan runs the build: the stages that run are the plan's, in its order, and --dry-run shows that plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgepack.builder.pipeline import build
from edgepack.builder.plan import plan_build
from edgepack.cli.app import app
from tests.conftest import write_target

pytestmark = pytest.mark.slow
runner = CliRunner()

PROFILES = {
    # name: (profile text, stages that must be in the plan, stages that must not)
    "plain-fp32": ("extends: raspberry-pi-4\nbuild: {precision: fp32, fallback: off}\n", {"convert", "verify"}, {"prune", "recover"}),
    "int8-recoverable": ("extends: raspberry-pi-4\nbuild: {precision: int8}\n", {"convert", "verify", "recover"}, {"prune"}),
    "pruned-fp16": (
        "extends: raspberry-pi-4\nbuild: {precision: fp16, prune: {sparsity: 0.3, fine_tune_epochs: 1}}\nbudgets: {max_accuracy_drop: 1.0}\n",
        {"prune", "fine-tune", "verify-pruned", "convert", "verify", "recover"},
        set(),
    ),
}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_stages_that_run_are_the_plans_stages_in_order(isolated_user_dirs, digits_files, name):
    model, data = digits_files
    text, present, absent = PROFILES[name]
    write_target(isolated_user_dirs, name, text)
    planned = [s.name for s in plan_build(model, name, data=data).stages]
    assert present <= set(planned) and not absent & set(planned), planned
    assert planned[0] == "load" and planned[-1] == "package"

    events = []
    result = build(model, name, data=data, use_cache=False, on_stage=lambda stage, detail, seconds: events.append((stage, seconds)))
    finished = [stage for stage, seconds in events if seconds is not None]
    assert finished == planned
    assert {stage for stage, _ in events} == set(planned)  # what a stage says while it runs is said under its own name
    assert list(result.stage_seconds) == planned

    shown = runner.invoke(app, ["build", str(model), "--target", name, "--data", str(data), "--dry-run", "--json"])
    assert shown.exit_code == 0, shown.output
    assert [s["name"] for s in json.loads(shown.stdout)["stages"]] == planned


def test_a_cached_build_runs_no_stage_of_the_plan(isolated_user_dirs, digits_files):
    model, data = digits_files
    write_target(isolated_user_dirs, "plain-fp32", PROFILES["plain-fp32"][0])
    build(model, "plain-fp32", data=data)
    events = []
    again = build(model, "plain-fp32", data=data, on_stage=lambda stage, detail, seconds: events.append(stage))
    assert again.cached and set(events) == {"cache"}


def test_a_model_factorys_default_bundle_folder_is_named_without_a_colon():
    from edgepack.builder.plan import default_out

    assert default_out("my_pkg.models:make_model", "raspberry-pi-4") == Path("build/my_pkg.models-make_model-raspberry-pi-4")
    assert default_out("models/cnn.keras", "raspberry-pi-4") == Path("build/cnn-raspberry-pi-4")
