"""`edgepack tune` searches runtime settings (threads, delegates, providers) beside the build's, and the tuned
profile records the runtime settings that won."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app
from edgepack.errors import ProfileError
from edgepack.profile.schema import Profile, TuneSpace
from edgepack.profile.store import Catalog
from edgepack.tuning.space import runtime_overrides, search_space, trial_settings
from tests.conftest import write_target

QUICK = ["--runs", "10", "--warmup", "1", "--min-seconds", "0", "--cold-loads", "0"]


def with_tune(name: str, **space) -> Profile:
    profile = Catalog().load(name).profile
    return profile.model_copy(update={"tune": TuneSpace(**space)})


def test_runtime_settings_join_the_space_and_the_trials_runtime_section():
    space = search_space(with_tune("raspberry-pi-4", precision=["fp32"], threads=[1, 4], delegates=[["xnnpack"], []]))
    assert space["threads"] == [1, 4] and space["delegates"] == ["xnnpack", "none"]
    params = {"precision": "fp32", "sparsity": 0.0, "channels": 0.0, "threads": 4, "delegates": "none"}
    assert runtime_overrides(params) == {"threads": 4, "delegates": []}
    assert trial_settings(params)["runtime"] == {"threads": 4, "delegates": []}
    assert "runtime" not in trial_settings({"precision": "fp32"})  # nothing runtime searched: the build alone
    providers = search_space(with_tune("jetson", precision=["fp16"], providers=[["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]]))
    assert providers["providers"] == ["CUDAExecutionProvider+CPUExecutionProvider", "CPUExecutionProvider"]


def test_delegates_for_an_onnx_target_and_providers_for_a_tflite_one_are_refused():
    with pytest.raises(ProfileError, match="tune.delegates"):
        search_space(with_tune("jetson", delegates=[["gpu"]]))
    with pytest.raises(ProfileError, match="tune.providers"):
        search_space(with_tune("raspberry-pi-4", providers=[["CPUExecutionProvider"]]))


@pytest.mark.slow
def test_tune_measures_each_thread_count_and_the_tuned_profile_records_the_winner(isolated_user_dirs, digits_files, tmp_path):
    from edgepack.profile.store import load_target
    from edgepack.results.store import open_store

    model, data = digits_files
    write_target(isolated_user_dirs, "pi", "extends: raspberry-pi-4\ntune: {precision: [fp32], sparsity: [0.0], channels: [0.0], threads: [1, 2]}\n")
    db = tmp_path / "h.sqlite3"
    result = CliRunner().invoke(app, ["tune", str(model), "-t", "pi", "--data", str(data), *QUICK, "--trials", "2", "--sampler", "grid",
                                      "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert sorted(t["params"]["threads"] for t in out["trials"]) == [1, 2]
    assert all(t["same_as"] is None for t in out["trials"] if "same_as" in t)  # different runtimes: two measurements
    with open_store(db) as history:  # each trial's bench ran with its own thread count
        assert sorted(r.report.runtime.threads for r in history.runs()) == [1, 2]
    chosen = next(t for t in out["trials"] if t["number"] == out["chosen"]["number"])
    assert load_target("pi-tuned").runtime.threads == chosen["params"]["threads"]
