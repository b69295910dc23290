"""`edgepack tune`: real builds and benches on the local device, searched by an Optuna study that resumes."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app
from tests.conftest import write_target

pytestmark = pytest.mark.slow
runner = CliRunner()
QUICK = ["--runs", "10", "--warmup", "1", "--min-seconds", "0", "--cold-loads", "0"]
SPACE = "extends: raspberry-pi-4\ntune: {precision: [int8, fp16], sparsity: [0.0], channels: [0.0, 0.5], calibration_samples: [200]}\n"


def tune(model, data, *extra):
    return runner.invoke(app, ["tune", str(model), "-t", "pi", "--data", str(data), *QUICK, *extra])


def test_tune_measures_each_trial_and_writes_the_fastest_that_meets_the_budgets(isolated_user_dirs, digits_files, tmp_path):
    from edgepack.profile.store import load_target
    from edgepack.results.store import open_store

    model, data = digits_files
    write_target(isolated_user_dirs, "pi", SPACE)
    db = tmp_path / "h.sqlite3"
    result = tune(model, data, "--trials", "3", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out["trials"]) == 3 and "-pi-local-" in out["study"]
    for t in out["trials"]:
        assert set(t) >= {"number", "params", "values", "state", "meets_budgets", "bundle"}
        assert t["state"] == "complete" and t["params"]["precision"] in ("int8", "fp16")
        assert t["values"]["p90_ms"] > 0 and t["values"]["size_kb"] > 0
    feasible = {t["number"]: t for t in out["trials"] if t["meets_budgets"]}
    chosen = out["chosen"]
    assert chosen["number"] in feasible and set(out["pareto"]) <= set(feasible) and chosen["number"] in out["pareto"]
    assert feasible[chosen["number"]]["values"]["p90_ms"] == min(t["values"]["p90_ms"] for t in feasible.values())
    profile = load_target("pi-tuned")
    assert profile.extends == "pi" and profile.build.precision.value == feasible[chosen["number"]]["params"]["precision"]
    text = (isolated_user_dirs / "targets" / "pi-tuned.yaml").read_text()
    assert f"# trial {chosen['number']}: p90 " in text
    with open_store(db) as history:  # every trial's bench is in the history, with its trial
        assert sorted((r.trial["study"], r.trial["number"]) for r in history.runs()) == [(out["study"], n) for n in range(3)]


def test_running_again_with_more_trials_continues_the_study(isolated_user_dirs, digits_files, tmp_path):
    model, data = digits_files
    write_target(isolated_user_dirs, "pi", SPACE)
    from edgepack.results.store import open_store

    db = tmp_path / "h.sqlite3"
    first = json.loads(tune(model, data, "--trials", "2", "--json", "--db", str(db)).stdout)
    again = tune(model, data, "--trials", "3", "--json", "--db", str(db))
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert [t["number"] for t in second["trials"]] == [0, 1, 2]
    assert [t["params"] for t in second["trials"][:2]] == [t["params"] for t in first["trials"]]
    with open_store(db) as history:
        assert history.count() <= 3  # the two finished trials were not measured again


def test_a_changed_search_space_starts_a_new_study_and_a_named_one_is_refused(isolated_user_dirs, digits_files):
    model, data = digits_files
    write_target(isolated_user_dirs, "pi", SPACE)
    first = json.loads(tune(model, data, "--trials", "1", "--json", "--study", "mine").stdout)
    write_target(isolated_user_dirs, "pi", SPACE.replace("channels: [0.0, 0.5]", "channels: [0.25]"))
    fresh = json.loads(tune(model, data, "--trials", "1", "--json").stdout)
    assert fresh["study"] != first["study"] and fresh["trials"][0]["params"]["channels"] == 0.25
    refused = tune(model, data, "--trials", "2", "--study", "mine")
    assert refused.exit_code == 2 and "was run with another search space" in refused.output


def test_save_as_never_replaces_a_profile_a_person_wrote(isolated_user_dirs, digits_files):
    model, data = digits_files
    write_target(isolated_user_dirs, "pi", SPACE)
    write_target(isolated_user_dirs, "mine", "extends: raspberry-pi-4\n")
    for name, expected in (("pi", "cannot replace the target it extends"), ("mine", "was not written by edgepack tune"), ("../x", "not a profile name")):
        result = tune(model, data, "--trials", "1", "--save-as", name)
        assert result.exit_code == 2 and expected in result.output, result.output
    assert (isolated_user_dirs / "targets" / "mine.yaml").read_text() == "extends: raspberry-pi-4\n"


def test_a_failed_trial_is_recorded_and_the_study_goes_on(isolated_user_dirs, digits_files, monkeypatch):
    import edgepack.benchmark as benchmark
    from edgepack.errors import DeviceError
    from edgepack.tuning.study import tune as run_tune

    real, calls = benchmark.bench, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise DeviceError("the agent on local could not measure it: out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmark, "bench", flaky)
    model, data = digits_files
    write_target(isolated_user_dirs, "pi", SPACE)
    from edgepack.benchmark import BenchOptions

    result = run_tune(model, "pi", data, trials=3, options=BenchOptions(runs=10, warmup=1, min_seconds=0, cold_loads=0))
    states = [t.state for t in result.trials]
    assert states == ["failed", "complete", "complete"]
    assert result.trials[0].failures == ["the agent on local could not measure it: out of memory"]
    assert result.chosen is not None and result.chosen.number != 0


def test_no_trial_within_the_budgets_exits_1_and_writes_no_profile(isolated_user_dirs, digits_files):
    model, data = digits_files
    write_target(isolated_user_dirs, "pi", SPACE + "budgets: {max_model_kb: 1}\n")
    result = tune(model, data, "--trials", "2")
    assert result.exit_code == 1, result.output
    assert "no trial of" in result.output and "met every budget of pi" in result.output
    assert not (isolated_user_dirs / "targets" / "pi-tuned.yaml").exists()
    as_json = tune(model, data, "--trials", "2", "--json")
    assert as_json.exit_code == 1
    out = json.loads(as_json.stdout[: as_json.stdout.rindex("}") + 1], parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert out["chosen"] is None and all(t["values"]["p90_ms"] is None for t in out["trials"])  # unmeasured: null


def test_the_grid_sampler_stops_when_the_grid_is_done(isolated_user_dirs, digits_files):
    model, data = digits_files
    write_target(isolated_user_dirs, "pi", "extends: raspberry-pi-4\ntune: {precision: [fp16], sparsity: [0.0], channels: [0.0, 0.5]}\n")
    out = json.loads(tune(model, data, "--trials", "10", "--sampler", "grid", "--json").stdout)
    assert sorted(t["params"]["channels"] for t in out["trials"]) == [0.0, 0.5]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--trials", "0"], "--trials 0: give between 1 and 10000"),
        (["--sampler", "annealing"], "unknown sampler 'annealing'"),
        (["--objective", "beauty"], "unknown objective 'beauty'"),
        (["--device", "nowhere"], "nowhere"),
        (["--workers", "0"], "--workers 0: give between 1 and 64"),
        (["--eval-data", "nope.npz"], "--eval-data nope.npz: no such file or directory"),
        (["--ray", "nowhere"], "--ray nowhere: not a Ray address"),
        (["--ray", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    ],
)
def test_bad_input_is_one_line_before_any_trial(isolated_user_dirs, digits_files, args, expected):
    model, data = digits_files
    write_target(isolated_user_dirs, "pi", SPACE)
    result = tune(model, data, *args)
    assert result.exit_code == 2 and expected in result.output, result.output
    assert "Traceback" not in result.output and not (isolated_user_dirs / "build").exists()


def test_int8_in_the_space_without_data_is_refused(isolated_user_dirs, digits_files):
    model, _ = digits_files
    write_target(isolated_user_dirs, "pi", SPACE)
    result = runner.invoke(app, ["tune", str(model), "-t", "pi", *QUICK])
    assert result.exit_code == 2 and "has int8, which needs calibration data" in result.output


def test_a_precision_the_runtime_cannot_run_is_refused(isolated_user_dirs, digits_files):
    model, data = digits_files
    write_target(isolated_user_dirs, "m", "extends: cortex-m7\ntune: {precision: [fp16]}\n")
    result = runner.invoke(app, ["tune", str(model), "-t", "m", "--data", str(data)])
    assert result.exit_code == 2 and "tune.precision fp16: runtime tflite-micro of target 'm' cannot run it" in result.output, result.output


def test_workers_build_in_parallel_processes_and_the_device_benches_one_at_a_time(isolated_user_dirs, digits_files, monkeypatch):
    import os
    import time

    import edgepack.benchmark as benchmark

    real, spans = benchmark.bench, []

    def timed(*args, **kwargs):
        start = time.monotonic()
        try:
            return real(*args, **kwargs)
        finally:
            spans.append((start, time.monotonic()))

    monkeypatch.setattr(benchmark, "bench", timed)
    model, data = digits_files
    write_target(isolated_user_dirs, "pi", SPACE)
    result = tune(model, data, "--trials", "3", "--workers", "2", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [t["state"] for t in out["trials"]] == ["complete"] * 3
    workers = {t["built"]["worker"] for t in out["trials"]}
    assert len(workers) == 3 and not any(w.endswith(f":{os.getpid()}") for w in workers)  # a build process each, not this one
    (a0, a1), (b0, b1) = [(t["built"]["started"], t["built"]["finished"]) for t in out["trials"][:2]]
    assert a0 < b1 and b0 < a1  # the first two builds ran at the same time
    spans.sort()
    assert len(spans) == 3 and all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))  # never overlapping


def test_without_ray_installed_ray_says_how_to_install_it(isolated_user_dirs, digits_files, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    model, data = digits_files
    write_target(isolated_user_dirs, "pi", SPACE)
    result = tune(model, data, "--ray", "127.0.0.1:6379")
    assert result.exit_code == 2 and "--ray needs Ray, which is not installed" in result.output
    assert "pip install 'edgepack[ray]'" in result.output and not (isolated_user_dirs / "build").exists()


def test_on_a_terminal_the_trials_show_as_a_live_table(isolated_user_dirs, digits_files, monkeypatch):
    import io

    from rich.console import Console

    from edgepack.cli import tune as tune_cli

    screen = io.StringIO()  # a terminal that writes into a string
    monkeypatch.setattr(tune_cli, "err_console", Console(file=screen, force_terminal=True, width=160, color_system="standard"))
    model, data = digits_files
    write_target(isolated_user_dirs, "pi", SPACE)
    result = tune(model, data, "--trials", "2")
    assert result.exit_code == 0, result.output
    live = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    final = live[live.rindex("edgepack tune") :]  # the live table's last render: both trials measured
    assert "building" not in final and final.count("precision ") == 2 and final.count("✓") + final.count("budget") == 2
    assert "edgepack tune: trial 2 of 2" in final and "edgepack tune: trial 1 of 2" in live
    assert re.search(r"benching: measuring on local\s+\d+ s", live)  # a trial's bench, with its step and its seconds
    assert "\x1b[" not in result.output  # nothing of the live table on the summary's stream


def test_ctrl_c_loses_no_finished_trial_and_the_next_run_goes_on_from_them(isolated_user_dirs, digits_files, monkeypatch):
    import edgepack.benchmark as benchmark
    from edgepack.benchmark import BenchOptions
    from edgepack.tuning.study import tune as run_tune

    real, calls = benchmark.bench, []

    def ctrl_c_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmark, "bench", ctrl_c_on_the_second)
    model, data = digits_files
    write_target(isolated_user_dirs, "pi", SPACE)
    quick = BenchOptions(runs=10, warmup=1, min_seconds=0, cold_loads=0)
    with pytest.raises(KeyboardInterrupt):
        run_tune(model, "pi", data, trials=3, options=quick)
    again = run_tune(model, "pi", data, trials=3, options=quick)
    # Trial 0 is kept as it was measured; the interrupted trial 1 is not a result and not counted:
    # two new trials, benched unless they make a build already measured.
    from edgepack.tuning.space import overrides

    assert [t.number for t in again.trials] == [0, 2, 3] and all(t.state == "complete" for t in again.trials)
    builds = {json.dumps(overrides(t.params), sort_keys=True) for t in again.trials}
    assert len(calls) == 2 + len(builds) - 1
    import optuna

    from edgepack.tuning.study import storage_url

    stored = optuna.load_study(study_name=again.study, storage=storage_url()).trials
    assert stored[1].state == optuna.trial.TrialState.FAIL  # interrupted mid-bench: never left running


@pytest.mark.parametrize("workers", ["1", "2"])  # with 2, both trials are asked before either is built
def test_settings_already_measured_are_not_built_again_and_count_once(isolated_user_dirs, digits_files, tmp_path, workers):
    from edgepack.results.store import open_store

    model, data = digits_files
    write_target(isolated_user_dirs, "pi", "extends: raspberry-pi-4\ntune: {precision: [fp16], sparsity: [0.0], channels: [0.0]}\n")
    db = tmp_path / "h.sqlite3"
    result = tune(model, data, "--trials", "2", "--workers", workers, "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    first, again = json.loads(result.stdout)["trials"]
    assert again["same_as"] == 0 and again["values"] == first["values"] and first["same_as"] is None
    assert json.loads(result.stdout)["pareto"] == [0]  # one build, one point
    with open_store(db) as history:
        assert history.count() == 1


def test_a_script_without_a_main_guard_runs_once_with_workers(isolated_user_dirs, digits_files):
    # Builds in worker processes must not import the caller's script again (as a spawned
    # multiprocessing pool would): a plain script calling edgepack.tune(workers=2) runs once.
    import subprocess
    import sys

    model, data = digits_files
    write_target(isolated_user_dirs, "pi", "extends: raspberry-pi-4\ntune: {precision: [fp16], sparsity: [0.0], channels: [0.0, 0.5]}\n")
    script = isolated_user_dirs / "app.py"
    script.write_text(
        "import edgepack\n"
        "from edgepack.benchmark import BenchOptions\n"
        "print('script ran', flush=True)\n"
        f"r = edgepack.tune({str(model)!r}, 'pi', {str(data)!r}, trials=2, workers=2,\n"
        "                  options=BenchOptions(runs=10, warmup=1, min_seconds=0, cold_loads=0))\n"
        "print('trials', len(r.trials), [t.state for t in r.trials])\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("script ran") == 1 and "trials 2 ['complete', 'complete']" in proc.stdout


def _start_study(model, **kw):
    """Create (or reopen) a study without running a trial: the time allowed is over before the first."""
    from edgepack.tuning.study import tune as run_tune

    return run_tune(model, "pi", trials=1, timeout_s=1e-9, study_name="lab", **kw)


def test_a_named_study_is_refused_for_another_model_or_data(isolated_user_dirs, tmp_path):
    from edgepack.errors import EdgepackError

    write_target(isolated_user_dirs, "pi", "extends: raspberry-pi-4\ntune: {precision: [fp16], sparsity: [0.0], channels: [0.0]}\n")
    first, second = tmp_path / "a.keras", tmp_path / "b.keras"
    first.write_bytes(b"model a")
    second.write_bytes(b"model b")
    _start_study(first)
    _start_study(first)  # the same model again: the study goes on
    with pytest.raises(EdgepackError) as exc:
        _start_study(second)
    assert exc.value.message == "study 'lab' was run with another model" and "--study" in exc.value.hint
    data = tmp_path / "d.npz"
    import numpy as np

    np.savez(data, x=np.zeros((2, 8, 8, 1), np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(EdgepackError) as exc:
        _start_study(first, eval_data=data)
    assert exc.value.message == "study 'lab' was run with other data"


def _tune_cli(tmp_path, *extra):
    model = tmp_path / "m.keras"
    model.write_bytes(b"model")
    return runner.invoke(app, ["tune", str(model), "-t", "pi", "--trials", "1", *extra])


@pytest.mark.parametrize("storage, expected", [
    ("data-is-a-file", "cannot make"),
    ("store-is-a-directory", "is a directory, not the tune studies' database"),
    ("store-is-text", "it is not an SQLite database"),
    ("store-of-another-revision", "written by another version of Optuna"),
])
def test_an_unusable_tune_store_is_one_line_and_exit_2(isolated_user_dirs, tmp_path, monkeypatch, storage, expected):
    import sqlite3

    from edgepack.tuning.study import storage_path

    write_target(isolated_user_dirs, "pi", "extends: raspberry-pi-4\ntune: {precision: [fp16], sparsity: [0.0], channels: [0.0]}\n")
    if storage == "data-is-a-file":
        blocker = tmp_path / "data-file"
        blocker.write_text("not a folder")
        monkeypatch.setenv("XDG_DATA_HOME", str(blocker))
    else:
        path = storage_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        if storage == "store-is-a-directory":
            path.mkdir()
        elif storage == "store-is-text":
            path.write_text("these are my notes, not a database\n" * 100)
        else:
            _start_study(tmp_path / "m.keras") if (tmp_path / "m.keras").write_bytes(b"model") else None
            with sqlite3.connect(path) as conn:
                conn.execute("UPDATE alembic_version SET version_num = 'v99.0.0.z'")
    result = _tune_cli(tmp_path)
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output and "internal error" not in result.output


def test_a_save_as_name_too_long_or_a_directory_in_the_way_is_one_line(isolated_user_dirs, tmp_path):
    write_target(isolated_user_dirs, "pi", "extends: raspberry-pi-4\ntune: {precision: [fp16], sparsity: [0.0], channels: [0.0]}\n")
    long_name = _tune_cli(tmp_path, "--save-as", "p" * 300)
    assert long_name.exit_code == 2 and "longer than 100 characters" in long_name.output, long_name.output
    (isolated_user_dirs / "targets" / "pi-tuned.yaml").mkdir()
    in_the_way = _tune_cli(tmp_path)
    assert in_the_way.exit_code == 2 and "pi-tuned.yaml is a directory" in in_the_way.output, in_the_way.output


def test_two_tunes_making_a_fresh_store_at_once_both_open_it(isolated_user_dirs, tmp_path):
    import os
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from edgepack.tuning.study import make_sampler, open_study\n"
        "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
        "open_study(sys.argv[2], ['minimize'], make_sampler('random'))\n"
        "print('opened')\n"
    )
    start = __import__("time").time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", script, str(start), f"s{i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ)) for i in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-500:] for _, err in outs]


def test_benches_on_one_device_wait_for_each_other_across_processes(isolated_user_dirs):
    import os
    import signal
    import subprocess
    import sys
    import threading

    from edgepack.tuning.study import device_lock

    holder = ("import sys\nfrom edgepack.tuning.study import device_lock\n"
              "with device_lock('pi4'):\n    print('held', flush=True)\n    sys.stdin.readline()\n")
    for release in ("done", "killed"):
        proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        assert proc.stdout.readline().strip() == "held"
        entered = threading.Event()

        def bench_here():
            with device_lock("pi4"):
                entered.set()

        other = threading.Thread(target=bench_here)
        other.start()
        with device_lock("orin"):  # another device is not held up
            pass
        assert not entered.wait(0.5)  # the other process benches on pi4: this one waits
        if release == "done":
            proc.stdin.write("\n")
            proc.stdin.flush()
        else:
            proc.send_signal(signal.SIGKILL)  # a killed tune leaves no stale lock
        assert entered.wait(30)
        other.join()
        proc.wait(timeout=30)


def test_a_trial_left_running_by_a_killed_tune_is_failed_by_the_next(isolated_user_dirs, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    import optuna

    from edgepack.tuning.study import open_study

    write_target(isolated_user_dirs, "pi", "extends: raspberry-pi-4\ntune: {precision: [fp16], sparsity: [0.0], channels: [0.0]}\n")
    killed = ("import time\nfrom edgepack.tuning.study import make_sampler, open_study\nfrom edgepack.tuning.storage import claim_trial\n"
              "study = open_study('lab', ['minimize', 'minimize'], make_sampler('random'))\n"
              "claim_trial(study.ask())\nprint('asked', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", killed], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout.readline().strip() == "asked"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    model = tmp_path / "a.keras"
    model.write_bytes(b"model a")
    _start_study(model)
    study = open_study("lab", ["minimize", "minimize"], None)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


def test_a_build_process_ends_when_its_tune_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    child = "import time\nfrom edgepack.tuning.builds import exit_with_parent\nexit_with_parent()\nprint('ready', flush=True)\ntime.sleep(120)\n"
    parent = ("import subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE, text=True)\n"
              "print(p.pid, p.stdout.readline().strip(), flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    pid, state = proc.stdout.readline().split()
    build = int(pid)
    assert state == "ready"  # the build runs, watching its parent
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for _ in range(100):
        try:
            os.kill(build, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(build, signal.SIGKILL)
        raise AssertionError("the build process outlived its tune")
