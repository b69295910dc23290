"""Verification fed batch by batch measures what it measures on all samples at once."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.builder.verify import OutputStats, compare, judge


def maps_and_scores():
    rng = np.random.default_rng(0)
    maps = 1 / (1 + np.exp(-rng.normal(0, 2, (37, 16, 16, 1)))).astype(np.float32)
    maps_q = np.clip(np.round(maps * 40) / 40 + rng.normal(0, 0.01, maps.shape), 0, 1).astype(np.float32)
    logits = rng.normal(0, 3, (37, 10))
    scores = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    scores_q = np.clip(scores + rng.normal(0, 0.02, scores.shape), 0, None).astype(np.float32)
    scores_q /= scores_q.sum(1, keepdims=True)
    return [maps, scores], [maps_q, scores_q], rng.integers(0, 10, 37)


@pytest.mark.parametrize("batch", [1, 5, 37])
def test_batched_statistics_match_the_whole_set(batch):
    reference, candidate, labels = maps_and_scores()
    whole = compare(reference, candidate, labels, 0.01, ["map", "scores"])
    stats = [OutputStats() for _ in reference]
    for start in range(0, 37, batch):
        for s, r, c in zip(stats, reference, candidate):
            s.add(r[start : start + batch], c[start : start + batch])
    batched = judge(stats, labels, 0.01, ["map", "scores"])
    assert batched.passed == whole.passed and batched.failures == whole.failures
    assert batched.accuracy_drop == pytest.approx(whole.accuracy_drop)
    for b, w in zip(batched.outputs, whole.outputs):
        assert b.kind == w.kind
        assert b.sqnr_db == pytest.approx(w.sqnr_db, rel=1e-9) and b.cosine == pytest.approx(w.cosine, rel=1e-9)
        assert b.max_rel_error == pytest.approx(w.max_rel_error) and b.mean_rel_error == pytest.approx(w.mean_rel_error)
    # and what it measured is the textbook figure: SQNR of the map over its variance
    ref, cand = reference[0].astype(np.float64), candidate[0].astype(np.float64)
    textbook = 10 * np.log10(np.var(ref) / np.mean((ref - cand) ** 2))
    assert batched.outputs[0].sqnr_db <= textbook + 1e-9


def test_a_nan_in_one_batch_fails_the_output():
    reference, candidate, _ = maps_and_scores()
    candidate[0][20, 3, 3, 0] = np.nan
    stats = [OutputStats() for _ in reference]
    for start in range(0, 37, 8):
        for s, r, c in zip(stats, reference, candidate):
            s.add(r[start : start + 8], c[start : start + 8])
    f = judge(stats, None, 0.01, ["map", "scores"])
    assert not f.passed and not f.outputs[0].passed and "NaN" in f.failures[0]
