"""The HTML report's plots of bench runs, drawn as inline SVG from the stored reports.

Every mark that stands for a figure carries it in ``data-value`` (and a ``<title>``, shown on hover).

- ``latency``: the distribution of every run's timed latencies, one lane per run: a histogram of
  all samples over the quartile box, the median, whiskers at the 1st and 99th percentiles and the
  p90. Samples beyond the axis are counted after the lane, never dropped silently.
- ``load``: load time, cold against warm, per run: the median as a bar, each sample as a dot.
- ``load-phases``: where a warm load's time goes, per run: one stacked bar of the phases (median
  ms each), and a second one for the load-optimised form where the bench measured one.
- ``size``, ``p90``, ``accuracy``: one bar per target (the newest run of each target and device).
- ``memory``: per run, the runtime's baseline RSS and the growth to the peak.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from edgepack.results.svg import COLD, PALETTE, WARM, Scale, esc, fmt, frame, log_ticks, svg, ticks, x_axis

if TYPE_CHECKING:
    from edgepack.results.store import RunRecord


def run_label(run: RunRecord) -> str:
    """A run as the plots name it: ``#12 pi-int8 @ pi4``."""
    return f"{run.label} {run.target} @ {run.device}"


def latency_plot(runs: Sequence[RunRecord]) -> str:
    """Draw every run's latency distribution: histogram, quartile box, median, p1/p99 whiskers, p90."""
    import numpy as np

    lanes = [(run, np.asarray(run.latency_samples, dtype=float)) for run in runs if run.latency_samples]
    if not lanes:
        return ""
    lo = min(float(np.percentile(s, 0.5)) for _, s in lanes)
    hi = max(float(np.percentile(s, 99.5)) for _, s in lanes)
    log = lo > 0 and hi / lo > 8  # tails or runs an order of magnitude apart: a log axis keeps each readable
    tick_values = log_ticks(lo, hi) if log else ticks(lo, hi)
    edges = np.geomspace(tick_values[0], tick_values[-1], 61) if log else np.linspace(tick_values[0], tick_values[-1], 61)
    stats = []
    for run, samples in lanes:
        p1, q1, med, q3, p90, p99 = (float(v) for v in np.percentile(samples, [1, 25, 50, 75, 90, 99]))
        below, above = int(np.sum(samples < edges[0])), int(np.sum(samples > edges[-1]))
        outside = f"{below} below, {above} above the axis" if below or above else ""
        stats.append((p1, q1, med, q3, p90, p99, outside))
    note = "shaded: histogram of every timed run; box: quartiles; white line: median; whiskers: 1st–99th percentile; ▲ p90"
    f = frame([run_label(r) for r, _ in lanes], [f"p90 {fmt(s[4])} ms, n={len(x)}" for (_, x), s in zip(lanes, stats)]
              + [s[6] for s in stats], [note])
    scale = Scale(tick_values[0], tick_values[-1], f.left, f.right, log=log)
    lane_h, hist_h, top = 78, 44, 30
    bottom = top + lane_h * len(lanes)
    body = [f'<text class="note" x="0" y="14">{esc(note)}</text>',
            x_axis(scale, tick_values, top, bottom, "latency, ms" + (" (log scale)" if log else ""))]
    for i, ((run, samples), (p1, q1, med, q3, p90, p99, outside)) in enumerate(zip(lanes, stats)):
        y0 = top + i * lane_h
        base = y0 + 6 + hist_h  # the histogram stands on this line; the box sits under it
        mid = base + 12
        colour = PALETTE[i % len(PALETTE)]
        counts, _ = np.histogram(samples, bins=edges)
        peak = max(int(counts.max()), 1)
        body.append(
            f'<g class="run" data-run="{run.id}" data-median="{med:.6g}" data-p90="{p90:.6g}" data-n="{len(samples)}">'
            f'<title>{esc(run_label(run))}: median {fmt(med)} ms, p90 {fmt(p90)} ms, {len(samples)} runs</title>'
            f'<text x="0" y="{mid + 4:.1f}">{esc(run_label(run))}</text>'
        )
        for c, a, b in zip(counts, edges[:-1], edges[1:]):
            if c:
                h = max(hist_h * c / peak, 1.5)
                body.append(
                    f'<rect class="bin" data-value="{int(c)}" x="{scale(a):.2f}" y="{base - h:.2f}" '
                    f'width="{max(scale(b) - scale(a) - 0.5, 0.5):.2f}" height="{h:.2f}" fill="{colour}" fill-opacity="0.6">'
                    f"<title>{fmt(a)}–{fmt(b)} ms: {int(c)} runs</title></rect>"
                )
        lo_x, hi_x = tick_values[0], tick_values[-1]
        x = {k: scale(min(max(v, lo_x), hi_x)) for k, v in (("p1", p1), ("q1", q1), ("med", med), ("q3", q3), ("p90", p90), ("p99", p99))}
        body.append(
            f'<line class="whisker" x1="{x["p1"]:.2f}" x2="{x["p99"]:.2f}" y1="{mid:.1f}" y2="{mid:.1f}" stroke="{colour}" stroke-width="1.5"/>'
            f'<rect class="box" data-value="{q1:.6g},{q3:.6g}" x="{x["q1"]:.2f}" y="{mid - 6:.1f}" width="{max(x["q3"] - x["q1"], 1):.2f}" '
            f'height="12" fill="{colour}"><title>quartiles {fmt(q1)}–{fmt(q3)} ms</title></rect>'
            f'<line class="median" data-value="{med:.6g}" x1="{x["med"]:.2f}" x2="{x["med"]:.2f}" y1="{mid - 6:.1f}" y2="{mid + 6:.1f}" stroke="#fff" stroke-width="2"/>'
            f'<path class="p90" data-value="{p90:.6g}" d="M{x["p90"]:.2f},{mid + 7:.1f} l-4,7 h8 z" fill="{colour}"><title>p90 {fmt(p90)} ms</title></path>'
            f'<text x="{f.figures_x:.1f}" y="{mid + 4:.1f}">p90 {esc(fmt(p90))} ms, n={len(samples)}</text>'
        )
        if outside:
            body.append(f'<text class="note" x="{f.figures_x:.1f}" y="{mid + 17:.1f}">{esc(outside)}</text>')
        body.append("</g>")
    return svg("latency", f.width, bottom + 34, body, "latency distribution per run")


def load_plot(runs: Sequence[RunRecord]) -> str:
    """Draw load time per run, cold against warm: medians as bars, every sample as a dot."""
    import statistics

    lanes = [run for run in runs if run.report.load and (run.report.load.cold_ms or run.report.load.warm_ms)]
    if not lanes:
        return ""
    figures = {}
    for run in lanes:
        load = run.report.load
        parts = [f"{kind} {fmt(statistics.median(s))}" for kind, s in (("cold", load.cold_ms), ("warm", load.warm_ms)) if s]
        figures[run.id] = ", ".join(parts) + " ms"
    note = "■ cold (fresh process, page cache evicted) ■ warm (fresh process): bar = median, dot = one load"
    f = frame([run_label(r) for r in lanes], figures.values(), [note])
    hi = max(max([*r.report.load.cold_ms, *r.report.load.warm_ms]) for r in lanes)
    tick_values = ticks(0.0, hi)
    scale = Scale(0.0, tick_values[-1], f.left, f.right)
    lane_h, top = 40, 30
    bottom = top + lane_h * len(lanes)
    body = [
        f'<text class="note" x="0" y="14"><tspan fill="{COLD}">■ cold</tspan> (fresh process, page cache evicted) '
        f'<tspan fill="{WARM}">■ warm</tspan> (fresh process): bar = median, dot = one load</text>',
        x_axis(scale, tick_values, top, bottom, "load time, ms"),
    ]
    for i, run in enumerate(lanes):
        y0 = top + i * lane_h
        load = run.report.load
        body.append(f'<g class="run" data-run="{run.id}"><text x="0" y="{y0 + lane_h / 2 + 4:.1f}">{esc(run_label(run))}</text>')
        for k, (kind, samples, colour) in enumerate((("cold", load.cold_ms, COLD), ("warm", load.warm_ms, WARM))):
            if not samples:
                continue
            med = statistics.median(samples)
            y = y0 + 6 + k * 15
            body.append(
                f'<rect class="bar {kind}" data-value="{med:.6g}" x="{f.left:.1f}" y="{y:.1f}" width="{max(scale(med) - f.left, 1):.2f}" '
                f'height="12" fill="{colour}" fill-opacity="0.7"><title>{kind} load, median {fmt(med)} ms of {len(samples)}</title></rect>'
            )
            for v in samples:
                body.append(f'<circle class="sample {kind}" data-value="{v:.6g}" cx="{scale(v):.2f}" cy="{y + 6:.1f}" r="2.5" fill="#222"/>')
        body.append(f'<text x="{f.figures_x:.1f}" y="{y0 + lane_h / 2 + 4:.1f}">{esc(figures[run.id])}</text></g>')
    return svg("load", f.width, bottom + 34, body, "load time, cold versus warm")


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
    f = frame([run_label(r) for r, _ in lanes], [f"{form} {fmt(sum(p.values()))} ms" for _, bars in lanes for form, p in bars])
    hi = max(sum(phases.values()) for _, bars in lanes for _, phases in bars)
    tick_values = ticks(0.0, hi)
    scale = Scale(0.0, tick_values[-1], f.left, f.right)
    per_row = max(1, int(f.width // 200))
    bar_h, top = 14, 30 + 16 * ((len(names) + per_row - 1) // per_row)
    heights = [10 + len(bars) * (bar_h + 4) for _, bars in lanes]
    bottom = top + sum(heights)
    body = []
    for i, name in enumerate(names):
        body.append(f'<g class="legend" transform="translate({(i % per_row) * 200},{14 + 16 * (i // per_row)})">'
                    f'<rect x="0" y="-9" width="10" height="10" fill="{colour[name]}"/><text x="14" y="0">{esc(name.replace("_", " "))}</text></g>')
    body.append(x_axis(scale, tick_values, top, bottom, "ms (median of the warm loads per phase)"))
    y0 = top
    for (run, bars), height in zip(lanes, heights):
        body.append(f'<g class="run" data-run="{run.id}"><text x="0" y="{y0 + 5 + bar_h - 2:.1f}">{esc(run_label(run))}</text>')
        for k, (form, phases) in enumerate(bars):
            y = y0 + 5 + k * (bar_h + 4)
            x, total = f.left, sum(phases.values())
            body.append(f'<g class="phases" data-form="{esc(form)}" data-total="{total:.6g}">')
            for name, ms in phases.items():
                w = scale(ms) - f.left
                body.append(
                    f'<rect class="phase" data-phase="{esc(name)}" data-value="{ms:.6g}" x="{x:.2f}" y="{y:.1f}" width="{max(w, 0.5):.2f}" '
                    f'height="{bar_h}" fill="{colour[name]}"><title>{esc(form)}: {esc(name.replace("_", " "))} {fmt(ms)} ms</title></rect>'
                )
                x += w
            body.append(f'<text x="{f.figures_x:.1f}" y="{y + bar_h - 2:.1f}">{esc(form)} {esc(fmt(total))} ms</text></g>')
        body.append("</g>")
        y0 += height
    return svg("load-phases", f.width, bottom + 34, body, "load phases per run")


def bar_plot(plot: str, title: str, unit: str, bars: list[tuple[str, Optional[float]]]) -> str:
    """Draw one horizontal bar per (label, value); a missing value is written as such."""
    if not bars:
        return ""
    f = frame([label for label, _ in bars], [f"{fmt(v)} {unit}" for _, v in bars], [title])
    hi = max([v for _, v in bars if v is not None] or [1.0])
    tick_values = ticks(0.0, hi)
    scale = Scale(0.0, tick_values[-1], f.left, f.right)
    lane_h, top = 26, 24
    bottom = top + lane_h * len(bars)
    body = [f'<text class="note" x="0" y="14">{esc(title)}</text>', x_axis(scale, tick_values, top, bottom, unit)]
    for i, (label, value) in enumerate(bars):
        y = top + i * lane_h
        body.append(f'<g class="target"><text x="0" y="{y + 17:.1f}">{esc(label)}</text>')
        if value is None:
            body.append(f'<text class="note" x="{f.left + 4:.1f}" y="{y + 17:.1f}">not measured</text></g>')
            continue
        body.append(
            f'<rect class="bar" data-value="{value:.6g}" x="{f.left:.1f}" y="{y + 5:.1f}" width="{max(scale(value) - f.left, 1):.2f}" '
            f'height="16" fill="{PALETTE[i % len(PALETTE)]}"><title>{esc(label)}: {fmt(value)} {esc(unit)}</title></rect>'
            f'<text x="{f.figures_x:.1f}" y="{y + 17:.1f}">{esc(fmt(value))} {esc(unit)}</text></g>'
        )
    return svg(plot, f.width, bottom + 34, body, title)


def memory_plot(runs: Sequence[RunRecord]) -> str:
    """Draw memory per run: the runtime's baseline RSS, then the growth up to the peak."""
    lanes = [run for run in runs if run.report.memory and run.report.memory.peak_rss_mb is not None]
    if not lanes:
        return ""
    note = "■ baseline RSS (after the runtime import) ■ growth to the peak RSS (after load and inference)"
    f = frame([run_label(r) for r in lanes], [f"peak {fmt(r.report.memory.peak_rss_mb)} MB" for r in lanes], [note])
    tick_values = ticks(0.0, max(r.report.memory.peak_rss_mb for r in lanes))
    scale = Scale(0.0, tick_values[-1], f.left, f.right)
    lane_h, top = 26, 30
    bottom = top + lane_h * len(lanes)
    body = [
        f'<text class="note" x="0" y="14"><tspan fill="{COLD}">■ baseline RSS</tspan> (after the runtime import) '
        f'<tspan fill="{WARM}">■ growth</tspan> to the peak RSS (after load and inference)</text>',
        x_axis(scale, tick_values, top, bottom, "memory, MB"),
    ]
    for i, run in enumerate(lanes):
        m = run.report.memory
        y = top + i * lane_h
        base = m.baseline_rss_mb if m.baseline_rss_mb is not None else 0.0
        body.append(
            f'<g class="run" data-run="{run.id}"><text x="0" y="{y + 17:.1f}">{esc(run_label(run))}</text>'
            f'<rect class="bar baseline" data-value="{base:.6g}" x="{f.left:.1f}" y="{y + 5:.1f}" width="{max(scale(base) - f.left, 0):.2f}" '
            f'height="16" fill="{COLD}"><title>baseline {fmt(base)} MB</title></rect>'
            f'<rect class="bar peak" data-value="{m.peak_rss_mb:.6g}" x="{scale(base):.2f}" y="{y + 5:.1f}" '
            f'width="{max(scale(m.peak_rss_mb) - scale(base), 1):.2f}" height="16" fill="{WARM}">'
            f"<title>peak {fmt(m.peak_rss_mb)} MB (+{fmt(m.peak_rss_mb - base)} MB)</title></rect>"
            f'<text x="{f.figures_x:.1f}" y="{y + 17:.1f}">peak {esc(fmt(m.peak_rss_mb))} MB</text></g>'
        )
    return svg("memory", f.width, bottom + 34, body, "memory per run")
