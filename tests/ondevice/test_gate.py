"""The device applies the build's gate: each output judged by the kind and thresholds the build used, with the same
figures as the builder's verification."""

from __future__ import annotations

import numpy as np

from edgepack.builder.verify import output_fidelity
from edgepack.ondevice.gate import allowed_flips, dense_figures, gate_settings, judge_outputs
from edgepack.profile.schema import OutputKind


def settings(kinds, agreement=None, min_sqnr_db=20.0, min_cosine=0.99, max_drop=0.01):
    return {"kinds": kinds, "names": [f"out{i}" for i in range(len(kinds))], "built_agreement": agreement or [None] * len(kinds),
            "min_sqnr_db": min_sqnr_db, "min_cosine": min_cosine, "max_accuracy_drop": max_drop}


def test_dense_figures_on_the_device_are_the_builders():
    rng = np.random.default_rng(0)
    want = rng.uniform(0, 1, (8, 16, 16, 1))
    got = want + rng.normal(0, 0.02, want.shape)
    host = output_fidelity("map", OutputKind.dense, want, got)
    sqnr, cosine = dense_figures(want, got)
    assert abs(sqnr - host.sqnr_db) < 1e-9 and abs(cosine - host.cosine) < 1e-12


def test_a_flat_dense_map_fails_on_sqnr_and_cosine_where_agreement_alone_would_pass():
    rng = np.random.default_rng(1)
    want = rng.uniform(0, 1, (8, 32))
    flat = np.full_like(want, want.mean())
    judged = judge_outputs([want], [flat], settings(["dense"]))
    assert not judged["passed"] and judged["outputs"][0]["sqnr_db"] < 20 and "SQNR" in judged["failures"][0]
    good = judge_outputs([want], [want + 1e-4], settings(["dense"]))
    assert good["passed"] and good["failures"] == []


def test_class_outputs_may_disagree_only_as_often_as_the_build_measured():
    want = np.eye(10)[np.arange(8) % 10]
    got = want.copy()
    got[0] = np.roll(got[0], 1)  # one of eight answers differs
    assert not judge_outputs([want], [got], settings(["classes"], agreement=[1.0]))["passed"]
    assert judge_outputs([want], [got], settings(["classes"], agreement=[0.995]))["passed"]  # 0.5% of 8 rounds up to 1
    assert allowed_flips(8, 0.01, None) == 0 and allowed_flips(100, 0.01, None) == 1 and allowed_flips(8, 0.01, 0.9) == 1


def test_nan_answers_fail_the_gate():
    want = np.ones((2, 4))
    judged = judge_outputs([want], [np.full((2, 4), np.nan)], settings(["dense"]))
    assert not judged["passed"] and "NaN" in judged["failures"][0]


def test_the_gate_is_read_from_the_manifest():
    manifest = {"profile": {"verify": {"min_sqnr_db": 30, "min_cosine": 0.999}, "budgets": {"max_accuracy_drop": 0.02}},
                "fidelity": {"outputs": [{"name": "scores", "kind": "classes", "top1_agreement": 0.99}, {"name": "box", "kind": "dense"}]}}
    got = gate_settings(manifest)
    assert got["kinds"] == ["classes", "dense"] and got["names"] == ["scores", "box"] and got["built_agreement"] == [0.99, None]
    assert (got["min_sqnr_db"], got["min_cosine"], got["max_accuracy_drop"]) == (30.0, 0.999, 0.02)
    assert gate_settings({"fidelity": {"n_samples": 10}}) is None  # a bundle from before per-output fidelity: not judged


def test_each_output_is_judged_by_its_own_kind_where_an_earlier_one_has_no_reference():
    want = np.linspace(0, 1, 16).reshape(2, 8)
    got = want + np.linspace(-0.4, 0.4, 16).reshape(2, 8)  # far off for a dense map, the same top-1 for classes
    as_second = judge_outputs([want], [got], settings(["dense", "classes"], agreement=[None, 1.0]), indices=[1])
    assert as_second["outputs"][0]["kind"] == "classes" and as_second["passed"]
    assert not judge_outputs([want], [got], settings(["dense", "classes"], agreement=[None, 1.0]))["passed"]  # judged as the first: dense
