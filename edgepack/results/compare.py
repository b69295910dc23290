"""Compare two stored runs: deltas, a noise-aware verdict, and the regression gate.

The verdict on latency (and on load times) is taken on the raw samples, not on two summary
numbers, because the interesting question is whether B differs from A by more than A and B
differ from themselves. The rule, applied to the samples of A and of B:

1. **Inside the spread: no change.** If A's median lies within B's interquartile range (Q1..Q3)
   *and* B's median lies within A's, the difference is smaller than the runs' own spread, and it
   is reported as "no change", whatever a test would say. Two benches of one bundle differ by
   more than their sampling error (another process start, another CPU frequency, another cache
   state), so a test alone flags differences no one could reproduce; the interquartile range is
   the spread one run already shows, robust to the outliers benchmarks always have.
2. **Beyond the spread and significant: faster or slower.** Otherwise a two-sided Mann-Whitney U
   test (normal approximation with the tie correction; no assumption of normal latencies) must
   give p < 0.01 for "faster" / "slower", with B's median over A's as the size of the change.
   The test is what keeps a handful of samples (three cold loads) from deciding: with too few,
   it cannot reach p < 0.01.
3. **Beyond the spread but not significant: unclear** (usually: too few samples).

Latency samples within one run are somewhat autocorrelated, so the test's p-value is optimistic;
rule 1 is the guard against that. Figures measured once per run (peak memory) have no spread of
their own: a change within ``MEMORY_TOLERANCE`` is "no change". Model size and accuracy are
exact: any difference is one.

The regression gate (`regressions`) is a plain threshold on the relative change of p90 latency,
peak memory and model size against a baseline run, so that CI gets a rule it can predict.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from edgepack.errors import EdgepackError
from edgepack.results.store import RunRecord

ALPHA = 0.01
MEMORY_TOLERANCE = 0.02  # peak RSS is read once per run; changes within 2% are not taken as real

NO_CHANGE, UNCLEAR, NA = "no change", "unclear", "n/a"


@dataclass
class Verdict:
    """What changed, in one word (``no change``, ``faster``, ``slower``, ``unclear``, ...) and why."""

    word: str
    reason: str = ""
    p_value: Optional[float] = None

    @property
    def changed(self) -> bool:
        return self.word not in (NO_CHANGE, UNCLEAR, NA, "same")


@dataclass
class Row:
    """One measure of two runs: A's value, B's, and the verdict on the difference."""

    measure: str
    unit: str
    a: Optional[float]
    b: Optional[float]
    verdict: Optional[Verdict] = None

    @property
    def delta(self) -> Optional[float]:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def relative(self) -> Optional[float]:
        """(B - A) / A, None where A is missing or zero."""
        return None if self.delta is None or not self.a else self.delta / self.a


@dataclass
class Comparison:
    """Run A against run B: one row per measure, the latency verdict, and notes on what differs besides."""

    a: RunRecord
    b: RunRecord
    rows: list[Row]
    latency: Verdict
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.summary(),
            "b": self.b.summary(),
            "latency_verdict": {"verdict": self.latency.word, "reason": self.latency.reason, "p_value": self.latency.p_value},
            "rows": [
                {
                    "measure": r.measure,
                    "unit": r.unit,
                    "a": r.a,
                    "b": r.b,
                    "delta": r.delta,
                    "relative": r.relative,
                    "verdict": r.verdict.word if r.verdict else None,
                    "reason": r.verdict.reason if r.verdict else None,
                }
                for r in self.rows
            ],
            "notes": self.notes,
        }


# -- the noise-aware rule -------------------------------------------------------------------

def _quartiles(x: Sequence[float]) -> tuple[float, float, float]:
    import numpy as np

    q1, q2, q3 = np.percentile(np.asarray(x, dtype=float), [25, 50, 75])
    return float(q1), float(q2), float(q3)


def p_value(p: float) -> str:
    """Write a p-value after "p": ``=0.03``, or ``<0.0001`` where it is smaller (never ``=0``)."""
    return "<0.0001" if p < 1e-4 else f"={p:.2g}"


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Return the two-sided p-value of a Mann-Whitney U test (normal approximation, tie-corrected)."""
    import numpy as np

    x = np.concatenate([np.asarray(a, dtype=float), np.asarray(b, dtype=float)])
    n1, n2 = len(a), len(b)
    n = n1 + n2
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # tied values share their average rank
    u = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
    ties = float(np.sum(counts.astype(float) ** 3 - counts))
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:  # every sample equal
        return 1.0
    z = (abs(u - n1 * n2 / 2.0) - 0.5) / math.sqrt(var)  # 0.5: continuity correction
    return float(min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2.0))))


def compare_samples(a: Sequence[float], b: Sequence[float], lower: str = "faster", higher: str = "slower") -> Verdict:
    """Judge whether samples B differ from samples A beyond their own spread (the rule in the module docstring).

    Args:
        a, b: raw samples of one measure (latencies in ms, load times).
        lower, higher: the words for B below or above A.

    Returns:
        The verdict: ``no change``, LOWER, HIGHER, or ``unclear``.
    """
    if len(a) == 0 or len(b) == 0:
        return Verdict(NA, "no samples in one of the runs")
    qa1, ma, qa3 = _quartiles(a)
    qb1, mb, qb3 = _quartiles(b)
    ratio = mb / ma if ma else math.inf
    change = f"{100 * (ratio - 1):+.1f}%" if math.isfinite(ratio) else "from 0"
    if qb1 <= ma <= qb3 and qa1 <= mb <= qa3:
        return Verdict(NO_CHANGE, f"medians {ma:.4g} and {mb:.4g} lie inside each other's interquartile range")
    if len(a) < 2 or len(b) < 2:
        return Verdict(UNCLEAR, f"{len(a)} vs {len(b)} samples: too few to tell")
    p = mann_whitney_p(a, b)
    if p < ALPHA:
        word = higher if mb > ma else lower
        return Verdict(word, f"median {change} ({ma:.4g} -> {mb:.4g}), beyond both runs' spread, Mann-Whitney p{p_value(p)}", p)
    return Verdict(UNCLEAR, f"median {change}, beyond the spread but not significant ({len(a)} vs {len(b)} samples, p{p_value(p)})", p)


def _single(a: Optional[float], b: Optional[float], tolerance: float, lower: str, higher: str) -> Optional[Verdict]:
    if a is None or b is None:
        return None
    if a == b or (a and abs(b - a) / abs(a) <= tolerance):
        reason = "identical" if a == b else f"within {100 * tolerance:g}% (measured once per run)"
        return Verdict(NO_CHANGE if tolerance else "same", reason)
    return Verdict(higher if b > a else lower, f"{100 * (b - a) / a:+.1f}%" if a else "from 0")


# -- comparing two runs ---------------------------------------------------------------------

def _median(values: Sequence[float] | None) -> Optional[float]:
    return statistics.median(values) if values else None


def compare_runs(a: RunRecord, b: RunRecord) -> Comparison:
    """Compare run B with run A, measure by measure, with the noise-aware latency verdict."""
    ra, rb = a.report, b.report
    latency = compare_samples(a.latency_samples, b.latency_samples)
    cold_a, cold_b = (ra.load.cold_ms if ra.load else []), (rb.load.cold_ms if rb.load else [])
    warm_a, warm_b = (ra.load.warm_ms if ra.load else []), (rb.load.warm_ms if rb.load else [])

    def lat(name: str, run: RunRecord) -> Optional[float]:
        return getattr(run.report.latency_ms, name) if run.report.latency_ms else None

    def kb(run: RunRecord) -> Optional[float]:
        return run.model_bytes / 1024 if run.model_bytes is not None else None

    def pct(value: Optional[float]) -> Optional[float]:
        return 100 * value if value is not None else None

    def top1(run: RunRecord) -> Optional[float]:
        return run.report.check.top1_agreement if run.report.check else None

    rows = [
        Row("model size", "KB", kb(a), kb(b), _single(kb(a), kb(b), 0.0, "smaller", "larger")),
        Row("accuracy", "%", pct(a.accuracy), pct(b.accuracy), _single(a.accuracy, b.accuracy, 0.0, "lower", "higher")),
        Row("load cold", "ms", _median(cold_a), _median(cold_b), compare_samples(cold_a, cold_b) if cold_a and cold_b else None),
        Row("load warm", "ms", _median(warm_a), _median(warm_b), compare_samples(warm_a, warm_b) if warm_a and warm_b else None),
        Row("first inference", "ms", ra.first_inference_ms, rb.first_inference_ms),
        Row("latency p50", "ms", lat("p50", a), lat("p50", b), latency),
        Row("latency p90", "ms", lat("p90", a), lat("p90", b)),
        Row("latency p99", "ms", lat("p99", a), lat("p99", b)),
        Row("latency mean", "ms", lat("mean", a), lat("mean", b)),
        Row("throughput", "/s", ra.throughput_per_s, rb.throughput_per_s),
        Row("peak memory", "MB", a.peak_mb, b.peak_mb, _single(a.peak_mb, b.peak_mb, MEMORY_TOLERANCE, "less", "more")),
        Row("top-1 vs host", "%", pct(top1(a)), pct(top1(b)), _single(top1(a), top1(b), 0.0, "lower", "higher")),
    ]
    notes = []
    for what, va, vb in (("device", a.device, b.device), ("target", a.target, b.target)):
        if va != vb:
            notes.append(f"different {what}: {va} vs {vb}")
    if a.bundle_sha256 == b.bundle_sha256:
        notes.append("same bundle")
    elif a.manifest.get("artifact_sha256") and a.manifest.get("artifact_sha256") == b.manifest.get("artifact_sha256"):
        notes.append("same model file, different bundles")
    else:
        notes.append("different bundles")
    rta = f"{ra.runtime.name} {ra.runtime.version}" if ra.runtime else None
    rtb = f"{rb.runtime.name} {rb.runtime.version}" if rb.runtime else None
    if rta != rtb:
        notes.append(f"different runtime: {rta} vs {rtb}")
    return Comparison(a, b, rows, latency, notes)


# -- the regression gate --------------------------------------------------------------------

@dataclass
class GateRow:
    """One gated measure: baseline, current, relative change, and whether it regressed past the limit."""

    measure: str
    unit: str
    baseline: Optional[float]
    current: Optional[float]
    limit: float  # the largest allowed relative increase, 0.10 for 10%

    @property
    def change(self) -> Optional[float]:
        if self.baseline is None or self.current is None:
            return None
        if self.baseline == 0:
            return 0.0 if self.current == 0 else math.inf
        return (self.current - self.baseline) / self.baseline

    @property
    def regressed(self) -> bool:
        return self.change is not None and self.change > self.limit + 1e-12


def regressions(baseline: RunRecord, current: RunRecord, max_regression: float) -> list[GateRow]:
    """Gate CURRENT against BASELINE: p90 latency, peak memory and model size, each may grow by MAX_REGRESSION at most.

    Returns:
        One row per measure (a measure missing from either run is never a regression); check
        ``row.regressed``.
    """
    def kb(run: RunRecord) -> Optional[float]:
        return run.model_bytes / 1024 if run.model_bytes is not None else None

    return [
        GateRow("latency p90", "ms", baseline.p90_ms, current.p90_ms, max_regression),
        GateRow("peak memory", "MB", baseline.peak_mb, current.peak_mb, max_regression),
        GateRow("model size", "KB", kb(baseline), kb(current), max_regression),
    ]


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*$")


def parse_threshold(text: str) -> float:
    """Parse a regression threshold: ``10%`` or ``10`` (per cent) into 0.10.

    Raises:
        EdgepackError: not a non-negative number of per cent.
    """
    m = _PERCENT.match(text)
    if not m:
        raise EdgepackError(f"--max-regression '{text}' is not a percentage", hint="write it as 10% (or 10, or 2.5%)")
    return float(m.group(1)) / 100.0
