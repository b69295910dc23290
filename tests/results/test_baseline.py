"""`--baseline last` means the last run of the same target and model: never a bench of another (a tune trial)."""

from __future__ import annotations

from edgepack.results.store import open_store


def _add(history, target, sha, latency_ms, model_bytes=46_000, trial=None):
    from tests.results.conftest import agent_report, manifest

    m = manifest(target=target, model_bytes=model_bytes)
    m = m.model_copy(update={"source": m.source.model_copy(update={"sha256": sha})})
    return history.add(device="pi4", manifest=m, report=agent_report([latency_ms] * 50), bundle_sha=f"{model_bytes:064x}",
                       bundle_path=f"/bundles/{target}", trial=trial)


def test_last_is_the_same_target_and_model_never_a_tune_trial_of_another(tmp_path):
    from edgepack.results.gate import gate_runs, resolve_baseline

    db = tmp_path / "h.sqlite3"
    mine, other = "aa" * 32, "bb" * 32
    with open_store(db) as history:
        first = _add(history, "pi-int8", mine, 2.0)
        _add(history, "pi-trial-3", other, 1.0, model_bytes=10_000, trial={"study": "s", "number": 3})  # a tune trial since
        _add(history, "pi-int8", other, 1.0)  # the same target, another model
    base = resolve_baseline("last", "10%", db)  # resolved before the new bench, as `bench --baseline last` does
    with open_store(db) as history:
        new = _add(history, "pi-int8", mine, 2.1)
        lonely = _add(history, "pi-fp16", mine, 2.0)
    report = gate_runs(base, [new, lonely], db)
    same, none = report.checks
    assert same.baseline.id == first and same.rows and report.passed  # +5% against its own target and model
    assert none.baseline is None and none.rows == [] and "no earlier run of target pi-fp16" in none.note


def test_a_named_baseline_of_another_target_is_said_so(tmp_path):
    from edgepack.results.gate import gate_runs, resolve_baseline

    db = tmp_path / "h.sqlite3"
    with open_store(db) as history:
        trial = _add(history, "pi-trial-3", "bb" * 32, 1.0, trial={"study": "s", "number": 3})
        new = _add(history, "pi-int8", "aa" * 32, 2.0)
    check = gate_runs(resolve_baseline(f"#{trial}", "10%", db), [new], db).checks[0]
    assert check.baseline.id == trial and check.note == f"baseline #{trial} is of target pi-trial-3 and another model"
