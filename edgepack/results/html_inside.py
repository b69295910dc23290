"""The HTML report's plots of the device's inside: time per operator type, and latency over time under
sustained load with the CPU temperature beside it. Plain SVG, drawn from the stored reports."""

from __future__ import annotations

import html
from typing import Optional, Sequence

from edgepack.results.records import RunRecord

WIDTH, LEFT, RIGHT, TOP, HEIGHT = 760, 60, 60, 28, 220
LATENCY_COLOUR, P90_COLOUR, TEMP_COLOUR = "#1f77b4", "#9ecae1", "#d62728"
TOP_OP_TYPES = 12


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def newest_with(runs: Sequence[RunRecord], attribute: str) -> Optional[RunRecord]:
    """The newest run whose report carries ATTRIBUTE (operators, sustained)."""
    return next((r for r in reversed(list(runs)) if getattr(r.report, attribute, None) is not None), None)


def operator_bars(runs: Sequence[RunRecord]) -> tuple[str, str, list[tuple[str, Optional[float]]]]:
    """(title, unit, bars) of the time per op type (ms per run) of the newest run with per-operator times; no bars where none has."""
    run = newest_with(runs, "operators")
    ops = run.report.operators if run else None
    if ops is None or not ops.by_op_type:
        return "", "ms", []
    bars = [(f"{g.op_type} x{g.count}", g.ms) for g in ops.by_op_type[:TOP_OP_TYPES]]
    return f"time per op type, {run.label} {run.target} @ {run.device} ({ops.source})", "ms", bars


def polyline(points: list[tuple[float, float]], colour: str, kind: str, dash: str = "") -> str:
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline class="{kind}" points="{path}" fill="none" stroke="{colour}" stroke-width="2"{extra}/>'


def sustained_plot(runs: Sequence[RunRecord]) -> str:
    """Latency over time (p50, p90 per interval) with the hottest zone's temperature, of the newest sustained run."""
    run = newest_with(runs, "sustained")
    s = run.report.sustained if run else None
    if s is None or not s.intervals:
        return ""
    times = [i.t_s for i in s.intervals]
    lat_hi = max(i.p90_ms for i in s.intervals) * 1.1 or 1.0
    temps = [i.temp_c for i in s.intervals if i.temp_c is not None]
    t_lo, t_hi = (min(temps) - 2, max(temps) + 2) if temps else (0.0, 1.0)
    x_hi = max(times) or 1.0
    bottom = TOP + HEIGHT

    def x(t: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * t / x_hi

    def y_lat(ms: float) -> float:
        return bottom - HEIGHT * ms / lat_hi

    def y_temp(c: float) -> float:
        return bottom - HEIGHT * (c - t_lo) / (t_hi - t_lo)

    body = [
        f'<text class="note" x="0" y="14">{esc(f"{run.label} {run.target} @ {run.device}: {s.duration_s:g} s of continuous inference")}</text>',
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" stroke="#999"/>',
        f'<text x="{LEFT}" y="{bottom + 16}">0 s</text><text x="{WIDTH - RIGHT}" y="{bottom + 16}" text-anchor="end">{x_hi:.0f} s</text>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" fill="{LATENCY_COLOUR}">{lat_hi:.3g} ms</text>',
        f'<text x="{LEFT - 6}" y="{bottom}" text-anchor="end" fill="{LATENCY_COLOUR}">0</text>',
        polyline([(x(i.t_s), y_lat(i.p90_ms)) for i in s.intervals], P90_COLOUR, "p90", "4 3"),
        polyline([(x(i.t_s), y_lat(i.p50_ms)) for i in s.intervals], LATENCY_COLOUR, "p50"),
    ]
    for i in s.intervals:
        body.append(f'<circle cx="{x(i.t_s):.1f}" cy="{y_lat(i.p50_ms):.1f}" r="3" fill="{LATENCY_COLOUR}">'
                    f'<title>{i.t_s:.0f} s: p50 {i.p50_ms:.3f} ms, p90 {i.p90_ms:.3f} ms'
                    f'{f", {i.temp_c:.1f} °C" if i.temp_c is not None else ""}{f", {i.freq_mhz:.0f} MHz" if i.freq_mhz else ""}</title></circle>')
    if temps:
        body.append(polyline([(x(i.t_s), y_temp(i.temp_c)) for i in s.intervals if i.temp_c is not None], TEMP_COLOUR, "temperature"))
        body.append(f'<text x="{WIDTH - RIGHT + 6}" y="{TOP + 4}" fill="{TEMP_COLOUR}">{t_hi:.0f} °C</text>')
        body.append(f'<text x="{WIDTH - RIGHT + 6}" y="{bottom}" fill="{TEMP_COLOUR}">{t_lo:.0f} °C</text>')
    else:
        body.append(f'<text class="note" x="{LEFT + 8}" y="{TOP + 14}">no temperature: the device exposes no thermal zone</text>')
    if s.slowdown:
        body.append(f'<text x="{LEFT + 8}" y="{TOP + 30}" fill="{TEMP_COLOUR}">slowdown: {f"last p50 {s.slowdown_ratio:.2f}x the first" if s.slowdown_ratio else "the last interval is slower than the first"}</text>')
    height = bottom + 30
    return (f'<svg class="plot" data-plot="sustained" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
            f'aria-label="latency over time with temperature">' + "".join(body) + "</svg>")
