"""The regression gate over stored runs: did p90 latency, peak memory or model size grow past a limit?

`edgepack bench` and `edgepack deploy` resolve the baseline before they measure (so `last`
means the last run before this one), then gate every new run against it; `gate` does the same
for runs already in the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from edgepack.errors import EdgepackError
from edgepack.results.compare import GateRow, parse_threshold, regressions
from edgepack.results.store import RunRecord, open_store

DEFAULT_MAX_REGRESSION = "10%"


@dataclass
class Baseline:
    """The run every new run is gated against, and the largest allowed increase (0.10 for 10%)."""

    run: RunRecord
    max_regression: float


@dataclass
class GateCheck:
    """One run gated against the baseline: a row per gated measure."""

    run: RunRecord
    rows: list[GateRow]

    @property
    def regressed(self) -> list[GateRow]:
        return [row for row in self.rows if row.regressed]


@dataclass
class GateReport:
    """Every gated run against one baseline; `failures` says what regressed, one line each."""

    baseline: Baseline
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[str]:
        label = self.baseline.run.label
        return [
            f"{c.run.target} on {c.run.device}: {g.measure} {100 * g.change:+.1f}% over baseline {label} (limit +{100 * g.limit:g}%)"
            for c in self.checks
            for g in c.regressed
        ]

    def rows_for(self, run_id: Optional[int]) -> Optional[list[GateRow]]:
        """Return the gate rows of the run RUN_ID (None when it was not gated)."""
        return next((c.rows for c in self.checks if c.run.id == run_id), None)


def resolve_baseline(ref: Optional[str], max_regression: Optional[str] = None, db: Optional[Path] = None) -> Optional[Baseline]:
    """Resolve a baseline run reference (``#12``, ``12``, ``last``, ``last~1``) and a threshold (``10%``).

    Returns:
        The baseline, or None when REF is None (no gate).

    Raises:
        EdgepackError: a threshold without a baseline, or a malformed threshold;
            ResultsError: REF names no stored run.
    """
    if ref is None:
        if max_regression is not None:
            raise EdgepackError("--max-regression needs --baseline RUN", hint="for example: --baseline last --max-regression 10%")
        return None
    threshold = parse_threshold(max_regression if max_regression is not None else DEFAULT_MAX_REGRESSION)
    with open_store(db) as history:
        return Baseline(history.resolve(ref), threshold)


def gate_runs(baseline: Baseline, run_ids: Sequence[int], db: Optional[Path] = None) -> GateReport:
    """Gate the stored runs RUN_IDS against BASELINE."""
    with open_store(db) as history:
        runs = [history.get(run_id) for run_id in run_ids]
    return GateReport(baseline, [GateCheck(run, regressions(baseline.run, run, baseline.max_regression)) for run in runs])


def gate(runs: Sequence[str], baseline: str, max_regression: str = DEFAULT_MAX_REGRESSION, db: Optional[Path] = None) -> GateReport:
    """Gate stored RUNS (``#12``, ``last``...) against the stored BASELINE run.

    Args:
        runs: run references to check.
        baseline: the run they may not regress from.
        max_regression: the largest allowed increase of p90 latency, peak memory and model size.
        db: the results history [default: the user data directory's].

    Returns:
        The gate's rows per run; ``report.passed`` and ``report.failures`` say whether anything regressed.

    Raises:
        ResultsError: a run reference names no stored run; EdgepackError: a malformed threshold.
    """
    base = resolve_baseline(baseline, max_regression, db)
    with open_store(db) as history:
        ids = [history.resolve(ref).id for ref in runs]
    return gate_runs(base, ids, db)
