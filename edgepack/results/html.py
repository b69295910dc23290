"""One self-contained HTML report of stored runs, with plots drawn as inline SVG.

The file needs nothing else to be read: no script, no stylesheet or font to fetch, no network.
Every plot is an ``<svg class="plot" data-plot="...">`` drawn here from the stored reports, and
every mark that stands for a figure carries it in ``data-value`` (and a ``<title>``, which
browsers show on hover). The plots:

- ``latency``: the distribution of every run's timed latencies, one lane per run: a histogram of
  all samples, the quartile box, the median, whiskers at the 1st and 99th percentiles and the p90.
  Samples beyond the axis are counted at the lane's end, never dropped silently.
- ``load``: load time, cold against warm, per run: the median as a bar, each sample as a dot.
- ``load-phases``: where a warm load's time goes, per run: one stacked bar of the phases (median
  ms each: reading the file, building the interpreter, allocating tensors, the first inference;
  or ONNX Runtime's model loading and session initialisation), and a second one for the
  load-optimised form where the bench measured one.
- ``size``, ``p90``, ``accuracy``: one bar per target (the newest run of each target and device).
- ``memory``: per run, the runtime's baseline RSS and the growth to the peak.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from edgepack._version import __version__

if TYPE_CHECKING:
    from edgepack.results.store import RunRecord

WIDTH = 820
LEFT = 230  # room for a run's label
RIGHT = 150  # room for a figure after the lane
PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]
COLD, WARM = "#4c72b0", "#dd8452"

_CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 24px auto; max-width: 900px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin: 28px 0 6px; }
p.meta, figcaption { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
td.fail { color: #c44e52; font-weight: bold; } td.ok { color: #55a868; }
figure { margin: 8px 0 20px; } svg.plot { display: block; background: #fff; }
svg text { font: 11px system-ui, sans-serif; fill: #333; } svg .axis line, svg .axis path { stroke: #999; }
svg .grid { stroke: #eee; } svg .note { fill: #777; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    digits = max(0, 3 - int(math.floor(math.log10(abs(value)))) - 1)
    return f"{value:.{min(digits, 4)}f}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Return round tick values covering [LO, HI]."""
    if not hi > lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks, v = [], first
    while v < hi + step * 0.999:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Return 1-2-5 ticks covering [LO, HI] (both > 0), from the one at or below LO to the one at or above HI."""
    steps = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1) for m in (1, 2, 5)]
    first = max([t for t in steps if t <= lo * (1 + 1e-9)] or [steps[0]])
    last = min([t for t in steps if t >= hi * (1 - 1e-9)] or [steps[-1]])
    return [t for t in steps if first <= t <= last]


class _Scale:
    """Map a value range onto a pixel range, linearly or (LOG) logarithmically."""

    def __init__(self, lo: float, hi: float, px0: float, px1: float, log: bool = False):
        self.lo, self.hi, self.px0, self.px1, self.log = lo, hi if hi > lo else lo + 1.0, px0, px1, log

    def __call__(self, value: float) -> float:
        if self.log:
            f = (math.log(max(value, self.lo)) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        else:
            f = (value - self.lo) / (self.hi - self.lo)
        return self.px0 + f * (self.px1 - self.px0)


def _x_axis(scale: _Scale, ticks: list[float], top: float, bottom: float, unit: str) -> str:
    out = ['<g class="axis">']
    for t in ticks:
        x = scale(t)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 14:.1f}" text-anchor="middle">{_e(f"{t:g}")}</text>')
    out.append(f'<line x1="{scale.px0:.1f}" x2="{scale.px1:.1f}" y1="{bottom:.1f}" y2="{bottom:.1f}"/>')
    out.append(f'<text x="{scale.px1:.1f}" y="{bottom + 28:.1f}" text-anchor="end">{_e(unit)}</text></g>')
    return "".join(out)


def _svg(plot: str, height: float, body: list[str], label: str) -> str:
    return (
        f'<svg class="plot" data-plot="{plot}" viewBox="0 0 {WIDTH} {height:.0f}" width="{WIDTH}" height="{height:.0f}" '
        f'role="img" aria-label="{_e(label)}">' + "".join(body) + "</svg>"
    )


def _run_label(run: RunRecord) -> str:
    return f"{run.label} {run.target} @ {run.device}"


# -- the plots ------------------------------------------------------------------------------

def latency_plot(runs: Sequence[RunRecord]) -> str:
    """Draw every run's latency distribution: histogram, quartile box, median, p1/p99 whiskers, p90."""
    import numpy as np

    lanes = [(run, np.asarray(run.latency_samples, dtype=float)) for run in runs if run.latency_samples]
    if not lanes:
        return ""
    lo = min(float(np.percentile(s, 0.5)) for _, s in lanes)
    hi = max(float(np.percentile(s, 99.5)) for _, s in lanes)
    log = lo > 0 and hi / lo > 8  # tails or runs an order of magnitude apart: a log axis keeps each readable
    ticks = _log_ticks(lo, hi) if log else _ticks(lo, hi)
    scale = _Scale(ticks[0], ticks[-1], LEFT, WIDTH - RIGHT, log=log)
    lane_h, top = 46, 30
    bottom = top + lane_h * len(lanes)
    body = [
        '<text class="note" x="0" y="14">shaded: histogram of every timed run; box: quartiles; white line: median; '
        "whiskers: 1st–99th percentile; ▲ p90</text>",
        _x_axis(scale, ticks, top, bottom, "latency, ms" + (" (log scale)" if log else "")),
    ]
    edges = np.geomspace(ticks[0], ticks[-1], 61) if log else np.linspace(ticks[0], ticks[-1], 61)
    for i, (run, samples) in enumerate(lanes):
        y0 = top + i * lane_h
        mid = y0 + lane_h / 2
        colour = PALETTE[i % len(PALETTE)]
        q = np.percentile(samples, [1, 25, 50, 75, 90, 99])
        p1, q1, med, q3, p90, p99 = (float(v) for v in q)
        counts, _ = np.histogram(samples, bins=edges)
        below, above = int(np.sum(samples < edges[0])), int(np.sum(samples > edges[-1]))
        peak = max(int(counts.max()), 1)
        body.append(
            f'<g class="run" data-run="{run.id}" data-median="{med:.6g}" data-p90="{p90:.6g}" data-n="{len(samples)}">'
            f'<title>{_e(_run_label(run))}: median {_fmt(med)} ms, p90 {_fmt(p90)} ms, {len(samples)} runs</title>'
            f'<text x="0" y="{mid + 4:.1f}">{_e(_run_label(run))}</text>'
        )
        for c, a, b in zip(counts, edges[:-1], edges[1:]):
            if c:
                h = (lane_h - 8) * c / peak
                body.append(
                    f'<rect class="bin" data-value="{int(c)}" x="{scale(a):.2f}" y="{y0 + lane_h - 4 - h:.2f}" '
                    f'width="{max(scale(b) - scale(a) - 0.5, 0.5):.2f}" height="{h:.2f}" fill="{colour}" fill-opacity="0.25">'
                    f"<title>{_fmt(a)}–{_fmt(b)} ms: {int(c)} runs</title></rect>"
                )
        x = {k: scale(min(max(v, ticks[0]), ticks[-1])) for k, v in (("p1", p1), ("q1", q1), ("med", med), ("q3", q3), ("p90", p90), ("p99", p99))}
        body.append(
            f'<line class="whisker" x1="{x["p1"]:.2f}" x2="{x["p99"]:.2f}" y1="{mid:.1f}" y2="{mid:.1f}" stroke="{colour}"/>'
            f'<rect class="box" data-value="{q1:.6g},{q3:.6g}" x="{x["q1"]:.2f}" y="{mid - 7:.1f}" width="{max(x["q3"] - x["q1"], 1):.2f}" '
            f'height="14" fill="{colour}" fill-opacity="0.8"><title>quartiles {_fmt(q1)}–{_fmt(q3)} ms</title></rect>'
            f'<line class="median" data-value="{med:.6g}" x1="{x["med"]:.2f}" x2="{x["med"]:.2f}" y1="{mid - 7:.1f}" y2="{mid + 7:.1f}" stroke="#fff" stroke-width="2"/>'
            f'<path class="p90" data-value="{p90:.6g}" d="M{x["p90"]:.2f},{mid + 8:.1f} l-4,7 h8 z" fill="{colour}"><title>p90 {_fmt(p90)} ms</title></path>'
            f'<text x="{WIDTH - RIGHT + 8}" y="{mid + 4:.1f}">p90 {_e(_fmt(p90))} ms, n={len(samples)}</text>'
        )
        if below or above:
            body.append(f'<text class="note" x="{WIDTH - RIGHT + 8}" y="{mid + 17:.1f}">{below} below, {above} above the axis</text>')
        body.append("</g>")
    return _svg("latency", bottom + 34, body, "latency distribution per run")


def load_plot(runs: Sequence[RunRecord]) -> str:
    """Draw load time per run, cold against warm: medians as bars, every sample as a dot."""
    import statistics

    lanes = [run for run in runs if run.report.load and (run.report.load.cold_ms or run.report.load.warm_ms)]
    if not lanes:
        return ""
    hi = max(max([*r.report.load.cold_ms, *r.report.load.warm_ms]) for r in lanes)
    ticks = _ticks(0.0, hi)
    scale = _Scale(0.0, ticks[-1], LEFT, WIDTH - RIGHT)
    lane_h, top = 40, 30
    bottom = top + lane_h * len(lanes)
    body = [
        f'<text class="note" x="0" y="14"><tspan fill="{COLD}">■ cold</tspan> (fresh process, page cache evicted) '
        f'<tspan fill="{WARM}">■ warm</tspan> (fresh process): bar = median, dot = one load</text>',
        _x_axis(scale, ticks, top, bottom, "load time, ms"),
    ]
    for i, run in enumerate(lanes):
        y0 = top + i * lane_h
        load = run.report.load
        body.append(f'<g class="run" data-run="{run.id}"><text x="0" y="{y0 + lane_h / 2 + 4:.1f}">{_e(_run_label(run))}</text>')
        figures = []
        for k, (kind, samples, colour) in enumerate((("cold", load.cold_ms, COLD), ("warm", load.warm_ms, WARM))):
            if not samples:
                continue
            med = statistics.median(samples)
            y = y0 + 6 + k * 15
            figures.append(f"{kind} {_fmt(med)}")
            body.append(
                f'<rect class="bar {kind}" data-value="{med:.6g}" x="{LEFT}" y="{y:.1f}" width="{max(scale(med) - LEFT, 1):.2f}" '
                f'height="12" fill="{colour}" fill-opacity="0.7"><title>{kind} load, median {_fmt(med)} ms of {len(samples)}</title></rect>'
            )
            for v in samples:
                body.append(f'<circle class="sample {kind}" data-value="{v:.6g}" cx="{scale(v):.2f}" cy="{y + 6:.1f}" r="2.5" fill="#222"/>')
        body.append(f'<text x="{WIDTH - RIGHT + 8}" y="{y0 + lane_h / 2 + 4:.1f}">{_e(", ".join(figures))} ms</text></g>')
    return _svg("load", bottom + 34, body, "load time, cold versus warm")


def load_phases_plot(runs: Sequence[RunRecord]) -> str:
    """Draw each run's load phases as a stacked bar (median ms of each phase), the optimised form's under it."""
    lanes = []
    for run in runs:
        load = run.report.load
        if load is None or not load.phases_ms:
            continue
        bars = [("plain", load.phases_ms)]
        if load.optimized is not None and load.optimized.phases_ms:
            bars.append((load.optimized.form, load.optimized.phases_ms))
        lanes.append((run, bars))
    if not lanes:
        return ""
    names: list[str] = []
    for _, bars in lanes:
        for _, phases in bars:
            names += [n for n in phases if n not in names]
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    hi = max(sum(phases.values()) for _, bars in lanes for _, phases in bars)
    ticks = _ticks(0.0, hi)
    scale = _Scale(0.0, ticks[-1], LEFT, WIDTH - RIGHT)
    bar_h, top = 14, 30 + 16 * ((len(names) + 3) // 4)
    heights = [10 + len(bars) * (bar_h + 4) for _, bars in lanes]
    bottom = top + sum(heights)
    legend = []
    for i, name in enumerate(names):
        legend.append(f'<g class="legend" transform="translate({(i % 4) * 200},{14 + 16 * (i // 4)})">'
                      f'<rect x="0" y="-9" width="10" height="10" fill="{colour[name]}"/><text x="14" y="0">{_e(name.replace("_", " "))}</text></g>')
    body = [*legend, _x_axis(scale, ticks, top, bottom, "ms (median of the warm loads per phase)")]
    y0 = top
    for (run, bars), height in zip(lanes, heights):
        body.append(f'<g class="run" data-run="{run.id}"><text x="0" y="{y0 + 5 + bar_h - 2:.1f}">{_e(_run_label(run))}</text>')
        for k, (form, phases) in enumerate(bars):
            y = y0 + 5 + k * (bar_h + 4)
            x, total = float(LEFT), sum(phases.values())
            body.append(f'<g class="phases" data-form="{_e(form)}" data-total="{total:.6g}">')
            for name, ms in phases.items():
                w = scale(ms) - LEFT
                body.append(
                    f'<rect class="phase" data-phase="{_e(name)}" data-value="{ms:.6g}" x="{x:.2f}" y="{y:.1f}" width="{max(w, 0.5):.2f}" '
                    f'height="{bar_h}" fill="{colour[name]}"><title>{_e(form)}: {_e(name.replace("_", " "))} {_fmt(ms)} ms</title></rect>'
                )
                x += w
            body.append(f'<text x="{WIDTH - RIGHT + 8}" y="{y + bar_h - 2:.1f}">{_e(form)} {_e(_fmt(total))} ms</text></g>')
        body.append("</g>")
        y0 += height
    return _svg("load-phases", bottom + 34, body, "load phases per run")


def bar_plot(plot: str, title: str, unit: str, bars: list[tuple[str, Optional[float]]]) -> str:
    """Draw one horizontal bar per (label, value); a missing value is written as such."""
    shown = [(label, value) for label, value in bars]
    if not shown:
        return ""
    hi = max([v for _, v in shown if v is not None] or [1.0])
    ticks = _ticks(0.0, hi)
    scale = _Scale(0.0, ticks[-1], LEFT, WIDTH - RIGHT)
    lane_h, top = 26, 24
    bottom = top + lane_h * len(shown)
    body = [f'<text class="note" x="0" y="14">{_e(title)}</text>', _x_axis(scale, ticks, top, bottom, unit)]
    for i, (label, value) in enumerate(shown):
        y = top + i * lane_h
        colour = PALETTE[i % len(PALETTE)]
        body.append(f'<g class="target"><text x="0" y="{y + 17:.1f}">{_e(label)}</text>')
        if value is None:
            body.append(f'<text class="note" x="{LEFT + 4}" y="{y + 17:.1f}">not measured</text></g>')
            continue
        body.append(
            f'<rect class="bar" data-value="{value:.6g}" x="{LEFT}" y="{y + 5:.1f}" width="{max(scale(value) - LEFT, 1):.2f}" '
            f'height="16" fill="{colour}"><title>{_e(label)}: {_fmt(value)} {_e(unit)}</title></rect>'
            f'<text x="{WIDTH - RIGHT + 8}" y="{y + 17:.1f}">{_e(_fmt(value))} {_e(unit)}</text></g>'
        )
    return _svg(plot, bottom + 34, body, title)


def memory_plot(runs: Sequence[RunRecord]) -> str:
    """Draw memory per run: the runtime's baseline RSS, then the growth up to the peak."""
    lanes = [run for run in runs if run.report.memory and run.report.memory.peak_rss_mb is not None]
    if not lanes:
        return ""
    ticks = _ticks(0.0, max(r.report.memory.peak_rss_mb for r in lanes))
    scale = _Scale(0.0, ticks[-1], LEFT, WIDTH - RIGHT)
    lane_h, top = 26, 30
    bottom = top + lane_h * len(lanes)
    body = [
        f'<text class="note" x="0" y="14"><tspan fill="{COLD}">■ baseline RSS</tspan> (after the runtime import) '
        f'<tspan fill="{WARM}">■ growth</tspan> to the peak RSS (after load and inference)</text>',
        _x_axis(scale, ticks, top, bottom, "memory, MB"),
    ]
    for i, run in enumerate(lanes):
        m = run.report.memory
        y = top + i * lane_h
        base = m.baseline_rss_mb if m.baseline_rss_mb is not None else 0.0
        body.append(
            f'<g class="run" data-run="{run.id}"><text x="0" y="{y + 17:.1f}">{_e(_run_label(run))}</text>'
            f'<rect class="bar baseline" data-value="{base:.6g}" x="{LEFT}" y="{y + 5:.1f}" width="{max(scale(base) - LEFT, 0):.2f}" '
            f'height="16" fill="{COLD}"><title>baseline {_fmt(base)} MB</title></rect>'
            f'<rect class="bar peak" data-value="{m.peak_rss_mb:.6g}" x="{scale(base):.2f}" y="{y + 5:.1f}" '
            f'width="{max(scale(m.peak_rss_mb) - scale(base), 1):.2f}" height="16" fill="{WARM}">'
            f"<title>peak {_fmt(m.peak_rss_mb)} MB (+{_fmt(m.peak_rss_mb - base)} MB)</title></rect>"
            f'<text x="{WIDTH - RIGHT + 8}" y="{y + 17:.1f}">peak {_e(_fmt(m.peak_rss_mb))} MB</text></g>'
        )
    return _svg("memory", bottom + 34, body, "memory per run")


# -- the page -------------------------------------------------------------------------------

def tune_plot(runs: Sequence[RunRecord]) -> str:
    """Draw each `edgepack tune` study's trials: p90 against size, the Pareto front of those meeting every budget joined."""
    studies: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.trial and run.p90_ms is not None and run.model_bytes is not None:
            studies.setdefault(str(run.trial.get("study")), []).append(run)
    return "".join(_study_plot(name, trials) for name, trials in studies.items())


def _study_plot(study: str, trials: list[RunRecord]) -> str:
    def point(r: RunRecord) -> tuple[float, float]:
        return r.p90_ms, r.model_bytes / 1024

    ok = [r for r in trials if r.passed]
    front = sorted((r for r in ok if not any(
        all(a <= b for a, b in zip(point(o), point(r))) and point(o) != point(r) for o in ok)), key=point)
    xs, ys = [point(r)[0] for r in trials], [point(r)[1] for r in trials]
    xt, yt = _ticks(0.0, max(xs)), _ticks(0.0, max(ys))
    top, bottom, left, right = 30, 270, 70, WIDTH - 40
    sx, sy = _Scale(0.0, xt[-1], left, right), _Scale(0.0, yt[-1], bottom, top)
    body = [f'<text class="note" x="0" y="14">study {_e(study)}: <tspan fill="{COLD}">● meets every budget</tspan> '
            f'○ misses one; the line joins the Pareto front (p90 and size)</text>',
            _x_axis(sx, xt, top, bottom, "p90 latency on the device, ms"), '<g class="axis">']
    for t in yt:
        body.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>'
                    f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_e(f"{t:g}")}</text>')
    body.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}"/><text x="{left - 6}" y="{top - 8}" text-anchor="end">KB</text></g>')
    if len(front) > 1:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in map(point, front))
        body.append(f'<polyline class="front" points="{path}" fill="none" stroke="{COLD}" stroke-width="1.5"/>')
    for r in trials:
        x, y = point(r)
        kind = "pareto" if r in front else ("ok" if r.passed else "missed")
        fill = COLD if r.passed else "none"
        number = r.trial.get("number")
        body.append(
            f'<circle class="trial {kind}" data-trial="{_e(number)}" data-p90="{x:.6g}" data-size="{y:.6g}" cx="{sx(x):.1f}" '
            f'cy="{sy(y):.1f}" r="{5 if kind == "pareto" else 3.5}" fill="{fill}" stroke="{COLD if r.passed else "#999"}">'
            f'<title>trial {_e(number)} ({_e(r.label)}): p90 {_fmt(x)} ms, {_fmt(y)} KB</title></circle>'
        )
        if kind == "pareto":
            body.append(f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 5:.1f}">{_e(number)}</text>')
    return _svg("tune", bottom + 34, body, f"trials of study {study}")


def newest_per_target(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Return the newest run of each (target, device), in the order the targets first appear."""
    newest: dict[tuple[str, str], RunRecord] = {}
    for run in runs:
        key = (run.target, run.device)
        if key not in newest or run.id > newest[key].id:
            newest[key] = run
    return list(newest.values())


def _runs_table(runs: Sequence[RunRecord]) -> str:
    from edgepack.results.report import when

    head = ["run", "when", "device", "target", "build", "KB", "load cold ms", "p50 ms", "p90 ms", "peak MB", "accuracy", "budgets"]
    rows = []
    for run in runs:
        s = run.summary()
        cells = [
            (run.label, "l"), (when(run.created), "l"), (run.device, "l"), (run.target, "l"),
            (f"{run.format} {run.precision}", "l"),
            (_fmt(s["model_bytes"] / 1024) if s["model_bytes"] is not None else "-", ""),
            (_fmt(s["load_cold_ms"]), ""), (_fmt(s["latency_p50_ms"]), ""), (_fmt(s["latency_p90_ms"]), ""),
            (_fmt(s["peak_memory_mb"]), ""),
            (f"{100 * s['accuracy']:.2f} %" if s["accuracy"] is not None else "-", ""),
            ("✓" if run.passed else "✗", "ok" if run.passed else "fail"),
        ]
        rows.append("<tr>" + "".join(f'<td class="{c}">{_e(v)}</td>' for v, c in cells) + "</tr>")
    header = "".join(f'<th class="{"l" if i < 5 else ""}">{_e(h)}</th>' for i, h in enumerate(head))
    return f'<table class="runs"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_html(runs: Sequence[RunRecord], title: str = "edgepack results") -> str:
    """Return the whole report as one HTML document (no script, nothing fetched).

    Args:
        runs: the runs to show, oldest first.
    """
    from edgepack.results.html_inside import operator_bars, sustained_plot

    newest = newest_per_target(runs)
    several_devices = len({r.device for r in newest}) > 1

    def label(run: RunRecord) -> str:
        return f"{run.target} @ {run.device}" if several_devices else run.target

    def per_target(value: Callable[[RunRecord], Optional[float]]) -> list[tuple[str, Optional[float]]]:
        return [(label(r), value(r)) for r in newest]

    sections = [
        ("Latency distribution per run", latency_plot(runs), "Every timed inference, as the agent measured it on the device."),
        ("Load time, cold versus warm", load_plot(runs), "Each load in a fresh process; cold with the model file evicted from the page cache."),
        ("Where load time goes", load_phases_plot(runs),
         "Median of each phase over the warm loads (fresh processes), the first inference after the load included; "
         "the second bar is the load-optimised form the bench made on the device, where it made one."),
        ("Model size per target", bar_plot("size", "artifact size (newest run of each target)", "KB",
                                           per_target(lambda r: r.model_bytes / 1024 if r.model_bytes is not None else None)), ""),
        ("p90 latency per target", bar_plot("p90", "p90 latency (newest run of each target)", "ms", per_target(lambda r: r.p90_ms)), ""),
        ("Accuracy per target", bar_plot("accuracy", "accuracy of the artifact on the evaluation data, at build time", "%",
                                         per_target(lambda r: 100 * r.accuracy if r.accuracy is not None else None)), ""),
        ("Memory", memory_plot(runs), ""),
        ("Time per operator", bar_plot("operators", *operator_bars(runs)), "Mean per run from the runtime's own profiler on the device."),
        ("Latency over time under sustained load", sustained_plot(runs),
         "bench --sustained: p50 (line) and p90 (dashed) per interval, the hottest thermal zone in red."),
        ("Tuning studies", tune_plot(runs), "Each trial of an `edgepack tune` study as benched on the device; "
         "the Pareto front is among the trials that meet every budget, labelled with their trial numbers."),
    ]
    now = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{len(runs)} run{"s" if len(runs) != 1 else ""}, written {_e(now)} by edgepack {_e(__version__)}.</p>',
    ]
    if not runs:
        parts.append("<p>No runs stored yet: measure something with <code>edgepack bench BUNDLE</code>.</p>")
    else:
        parts.append(_runs_table(runs))
        for heading, svg, caption in sections:
            if svg:
                parts.append(f"<h2>{_e(heading)}</h2><figure>{svg}" + (f"<figcaption>{_e(caption)}</figcaption>" if caption else "") + "</figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(path: Path, runs: Sequence[RunRecord], title: str = "edgepack results") -> Path:
    """Write the report for RUNS to PATH (atomically) and return PATH."""
    from edgepack.atomic import cannot_write, write_atomic

    path = Path(path)
    html = render_html(runs, title)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, html)
    except OSError as exc:
        raise cannot_write(path, exc, "the report") from None
    return path
