"""The regression gate over stored runs: did p90 latency, peak memory or model size grow past a limit?

`edgepack bench` and `edgepack deploy` resolve the baseline before they measure (so `last`
means the last run before this one), then gate every new run against it; `gate` does the same
for runs already in the history.

`last` and `last~N` are relative to each gated run: the newest (N+1-th newest) earlier run of the
same target built from the same model, on any device; a bench of another target or model (a tune
trial, say) is never taken for it. Where there is none, the check says so and gates nothing. A
run named by its id is taken as named, and the check says where it differs in target or model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from edgepack.errors import EdgepackError
from edgepack.results.compare import GateRow, parse_threshold, regressions
from edgepack.results.store import RunRecord, open_store

DEFAULT_MAX_REGRESSION = "10%"


RELATIVE = re.compile(r"^last(?:~(?P<back>\d+))?$")


@dataclass
class Baseline:
    """What every new run is gated against, and the largest allowed increase (0.10 for 10%).

    Either one RUN the user named, or (``last~BACK``) each gated run's own: the BACK-th newest earlier
    run of its target and model, among the runs stored up to id BEFORE."""

    run: Optional[RunRecord]
    max_regression: float
    back: Optional[int] = None
    before: int = 0
    ref: str = ""


@dataclass
class GateCheck:
    """One run gated against its baseline: a row per gated measure (none where no baseline was found)."""

    run: RunRecord
    rows: list[GateRow]
    baseline: Optional[RunRecord] = None
    note: str = ""  # what the reader should know about the baseline: none found, another target or model

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
        return [
            f"{c.run.target} on {c.run.device}: {g.measure} {100 * g.change:+.1f}% over baseline {c.baseline.label} (limit +{100 * g.limit:g}%)"
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
    relative = RELATIVE.match(ref.strip().lower())
    with open_store(db) as history:  # with nothing stored, `last` names no run: refused before measuring
        if relative and history.count():
            newest = history.runs(last=1)
            return Baseline(None, threshold, back=int(relative["back"] or 0), before=newest[0].id if newest else 0, ref=ref.strip())
        return Baseline(history.resolve(ref), threshold, ref=ref.strip())


def model_sha(run: RunRecord) -> Optional[str]:
    """The sha256 of the model RUN's bundle was built from."""
    return (run.manifest.get("source") or {}).get("sha256")


def _check(history, baseline: Baseline, run: RunRecord) -> GateCheck:
    if baseline.run is not None:
        base = baseline.run
        differs = [what for what, same in (("target " + base.target, base.target == run.target),
                                           ("another model", model_sha(base) == model_sha(run))) if not same]
        note = f"baseline {base.label} is of {' and '.join(differs)}" if differs else ""
        return GateCheck(run, regressions(base, run, baseline.max_regression), base, note)
    before = min(baseline.before, run.id - 1)
    earlier = [r for r in history.runs(target=run.target) if r.id <= before and model_sha(r) == model_sha(run)]
    if len(earlier) <= baseline.back:
        found = f"{len(earlier)} earlier run{'s' if len(earlier) != 1 else ''}" if earlier else "no earlier run"
        return GateCheck(run, [], None, f"{found} of target {run.target} from this model: nothing to gate against for --baseline {baseline.ref}")
    base = earlier[-1 - baseline.back]
    return GateCheck(run, regressions(base, run, baseline.max_regression), base)


def gate_runs(baseline: Baseline, run_ids: Sequence[int], db: Optional[Path] = None) -> GateReport:
    """Gate the stored runs RUN_IDS against BASELINE (each against its own, for ``last``)."""
    with open_store(db) as history:
        runs = [history.get(run_id) for run_id in run_ids]
        return GateReport(baseline, [_check(history, baseline, run) for run in runs])


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
