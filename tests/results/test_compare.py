"""Comparing runs: the noise-aware verdict, the deltas, and the regression gate's rule."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.errors import EdgepackError
from edgepack.results.compare import compare_runs, compare_samples, mann_whitney_p, parse_threshold, regressions
from edgepack.results.store import open_store
from tests.results.conftest import add_run


def noisy(median: float, n: int = 300, seed: int = 0, spread: float = 0.08) -> np.ndarray:
    """Latencies as benches give them: log-normal around MEDIAN, with a few slow outliers."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(np.log(median), spread, n)
    x[rng.choice(n, n // 50, replace=False)] *= 4
    return x


def test_identical_samples_are_no_change():
    x = noisy(2.0)
    verdict = compare_samples(x, x.copy())
    assert verdict.word == "no change" and not verdict.changed
    assert "inside each other's interquartile range" in verdict.reason


def test_two_runs_of_the_same_distribution_are_no_change():
    for seed in range(20):
        assert compare_samples(noisy(2.0, seed=seed), noisy(2.0, seed=seed + 100)).word == "no change", seed


def test_a_shift_smaller_than_the_spread_is_no_change_even_when_a_test_would_call_it_significant():
    a, b = noisy(2.0, n=5000, seed=1), noisy(2.0 * 1.02, n=5000, seed=2)  # +2%, inside an IQR of about ±5%
    assert mann_whitney_p(a, b) < 0.01
    assert compare_samples(a, b).word == "no change"


def test_clearly_different_runs_are_slower_or_faster_with_the_size_of_the_change():
    a, b = noisy(2.0, seed=3), noisy(3.0, seed=4)
    slower = compare_samples(a, b)
    assert slower.word == "slower" and slower.changed and slower.p_value < 1e-6
    assert "median +5" in slower.reason  # about +50%
    assert compare_samples(b, a).word == "faster"


def test_too_few_samples_beyond_the_spread_are_unclear_not_a_change():
    verdict = compare_samples([10.0, 10.5, 11.0], [14.0, 14.5, 15.0])  # three cold loads each
    assert verdict.word == "unclear" and "not significant" in verdict.reason and not verdict.changed


def test_mann_whitney_matches_known_values():
    # Complete separation of 10 vs 10: U = 0, z = (50 - 0.5) / sqrt(175) -> p = 0.000183 (normal approximation).
    assert mann_whitney_p(range(10), range(10, 20)) == pytest.approx(0.000183, rel=0.01)
    assert mann_whitney_p([1, 2, 3], [1, 2, 3]) == 1.0
    assert mann_whitney_p([5, 5, 5], [5, 5, 5]) == 1.0


def test_compare_runs_gives_deltas_and_notes(db):
    with open_store(db) as history:
        a = history.get(add_run(history, latencies=noisy(2.0, seed=5), model_bytes=80_000, peak_mb=70.0))
        b = history.get(add_run(history, latencies=noisy(1.0, seed=6), model_bytes=20_000, peak_mb=70.5, device="orin"))
    cmp = compare_runs(a, b)
    rows = {r.measure: r for r in cmp.rows}
    assert cmp.latency.word == "faster" and rows["latency p50"].verdict is cmp.latency
    assert rows["model size"].verdict.word == "smaller" and rows["model size"].relative == pytest.approx(-0.75)
    assert rows["peak memory"].verdict.word == "no change"  # +0.7%, within the 2% tolerance
    assert rows["accuracy"].verdict.word == "same" and rows["accuracy"].delta == 0
    assert rows["latency p90"].delta < 0 and rows["load cold"].verdict.word == "no change"
    assert "different device: pi4 vs orin" in cmp.notes and "different bundles" in cmp.notes
    doc = cmp.to_dict()
    assert doc["latency_verdict"]["verdict"] == "faster" and doc["a"]["id"] == a.id and len(doc["rows"]) == len(cmp.rows)


def test_a_run_compared_with_itself_is_no_change_everywhere(db):
    with open_store(db) as history:
        run = history.get(add_run(history))
    cmp = compare_runs(run, run)
    assert cmp.latency.word == "no change" and "same bundle" in cmp.notes
    assert not any(r.verdict.changed for r in cmp.rows if r.verdict)


def test_regression_gate_flags_only_what_grew_past_the_limit(db):
    with open_store(db) as history:
        base = history.get(add_run(history, latencies=noisy(2.0, seed=7), model_bytes=40_000, peak_mb=60.0))
        worse = history.get(add_run(history, latencies=noisy(2.6, seed=8), model_bytes=41_000, peak_mb=75.0))
    rows = {r.measure: r for r in regressions(base, worse, 0.10)}
    assert rows["latency p90"].regressed and rows["latency p90"].change == pytest.approx(0.3, abs=0.08)
    assert rows["peak memory"].regressed and rows["peak memory"].change == pytest.approx(0.25)
    assert not rows["model size"].regressed and rows["model size"].change == pytest.approx(0.025)
    assert not any(r.regressed for r in regressions(base, worse, 0.5))
    assert not any(r.regressed for r in regressions(worse, base, 0.0))  # better is never a regression


@pytest.mark.parametrize("text, value", [("10%", 0.10), ("10", 0.10), ("2.5%", 0.025), (" 0 % ", 0.0), ("150%", 1.5)])
def test_thresholds_are_percentages(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["-5%", "ten", "10%%", "", "0.1x"])
def test_bad_thresholds_are_refused(text):
    with pytest.raises(EdgepackError, match="is not a percentage"):
        parse_threshold(text)


def test_a_vanishing_p_value_is_written_as_below_a_bound_not_zero():
    verdict = compare_samples(noisy(2.0, n=2000, seed=7), noisy(4.0, n=2000, seed=8))  # p underflows to 0.0
    assert verdict.word == "slower" and verdict.p_value < 1e-12
    assert verdict.reason.endswith("Mann-Whitney p<0.0001")
