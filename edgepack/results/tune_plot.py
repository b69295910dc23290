"""The HTML report's plot of each `edgepack tune` study: its trials, p90 against size, and the Pareto front.

The axes span the trials (not from zero), so that the points spread over the plot; the chosen
trial (the one `tune` writes as the tuned profile: the fastest p90 among those meeting every
budget, ties by size) is marked apart from the other points of the front.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePath
from typing import TYPE_CHECKING, Sequence

from edgepack.results.svg import CHOSEN, COLD, Scale, esc, fmt, svg, text_width, ticks, x_axis

if TYPE_CHECKING:
    from edgepack.results.store import RunRecord

GENERATED_NAME = re.compile(r"^[0-9a-f]{12}-.+-[0-9a-f]{8}$")  # `tune`'s own study names: model hash, target, device, settings hash
TRIAL_SUFFIX = re.compile(r"-trial-\d+$")


def tune_plot(runs: Sequence[RunRecord]) -> str:
    """Draw each `edgepack tune` study's trials: p90 against size, the Pareto front of those meeting every budget joined."""
    studies: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.trial and run.p90_ms is not None and run.model_bytes is not None:
            studies.setdefault(str(run.trial.get("study")), []).append(run)
    return "".join(study_plot(name, trials) for name, trials in studies.items())


def study_title(study: str, trials: Sequence[RunRecord]) -> str:
    """Name a study as a user knows it: the target tuned, the device, the model (and the name given with --study)."""
    first = trials[0]
    target = TRIAL_SUFFIX.sub("", first.target)
    model = PurePath(str((first.manifest.get("source") or {}).get("path") or "")).name
    title = f"tuning {target} on {first.device}" + (f", model {model}" if model else "")
    return title if GENERATED_NAME.match(study) else f"{title} (study {study})"


def chosen_trial(trials: Sequence[RunRecord]):
    """The trial `tune` chooses: the fastest p90 among those meeting every budget, ties by size; None when none does."""
    ok = [r for r in trials if r.passed]
    return min(ok, key=lambda r: (r.p90_ms, r.model_bytes), default=None)


def _span(values: list[float]) -> list[float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    return ticks(max(lo - pad, 0.0), hi + pad)


def study_plot(study: str, trials: list[RunRecord]) -> str:
    """Draw one study: every trial, the front joined, the chosen trial marked."""
    def point(r: RunRecord) -> tuple[float, float]:
        return r.p90_ms, r.model_bytes / 1024

    ok = [r for r in trials if r.passed]
    front = sorted((r for r in ok if not any(
        all(a <= b for a, b in zip(point(o), point(r))) and point(o) != point(r) for o in ok)), key=point)
    chosen = chosen_trial(trials)
    xt, yt = _span([point(r)[0] for r in trials]), _span([point(r)[1] for r in trials])
    title = study_title(study, trials)
    legend = f"{title}: ● meets every budget ○ misses one; the line joins the Pareto front; ★ the chosen trial"
    width = max(820.0, text_width(legend) + 8)
    top, bottom, left, right = 60, 300, 70, width - 40
    sx, sy = Scale(xt[0], xt[-1], left, right), Scale(yt[0], yt[-1], bottom, top)
    body = [f'<text class="note title" x="0" y="14">{esc(title)}</text>',
            f'<text class="note" x="0" y="30"><tspan fill="{COLD}">● meets every budget</tspan> ○ misses one; '
            f'the line joins the Pareto front (p90 and size); <tspan fill="{CHOSEN}">★ the chosen trial</tspan> (the tuned profile)</text>',
            x_axis(sx, xt, top, bottom, "p90 latency on the device, ms"), '<g class="axis">']
    for t in yt:
        body.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>'
                    f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{esc(f"{t:g}")}</text>')
    body.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}"/><text x="{left}" y="{top - 8}" text-anchor="middle">size, KB</text></g>')
    if len(front) > 1:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in map(point, front))
        body.append(f'<polyline class="front" points="{path}" fill="none" stroke="{COLD}" stroke-width="1.5"/>')
    for r in trials:
        x, y = point(r)
        kind = "pareto" if r in front else ("ok" if r.passed else "missed")
        number = r.trial.get("number")
        extra = ' data-chosen="true"' if r is chosen else ""
        body.append(
            f'<circle class="trial {kind}" data-trial="{esc(number)}"{extra} data-p90="{x:.6g}" data-size="{y:.6g}" cx="{sx(x):.1f}" '
            f'cy="{sy(y):.1f}" r="{5 if kind == "pareto" else 3.5}" fill="{COLD if r.passed else "none"}" stroke="{COLD if r.passed else "#999"}">'
            f'<title>trial {esc(number)} ({esc(r.label)}): p90 {fmt(x)} ms, {fmt(y)} KB{", chosen" if extra else ""}</title></circle>'
        )
        if r is chosen:
            cx, cy = sx(x), sy(y)
            star = " ".join(f"{cx + rad * math.sin(k * 0.6283185):.1f},{cy - rad * math.cos(k * 0.6283185):.1f}"
                            for k, rad in zip(range(10), [11, 4.5] * 5))
            body.append(f'<polygon class="chosen-mark" data-trial="{esc(number)}" points="{star}" fill="{CHOSEN}" stroke="#fff" '
                        f'stroke-width="0.8"><title>trial {esc(number)}: chosen, written as the tuned profile</title></polygon>'
                        f'<text x="{cx + 12:.1f}" y="{cy - 8:.1f}" fill="{CHOSEN}">{esc(number)} chosen</text>')
        elif kind == "pareto":
            body.append(f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 5:.1f}">{esc(number)}</text>')
    return svg("tune", width, bottom + 34, body, f"trials of {title}")
