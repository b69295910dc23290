"""One self-contained HTML report of stored runs, with plots drawn as inline SVG.

The file needs nothing else to be read: no script, no stylesheet or font to fetch, no network.
Every plot is an ``<svg class="plot" data-plot="...">`` drawn from the stored reports
(results/plots.py for bench runs, results/tune_plot.py for tune studies, results/svg.py for the
primitives).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from edgepack._version import __version__
from edgepack.results.plots import bar_plot, latency_plot, load_phases_plot, load_plot, memory_plot
from edgepack.results.svg import esc, fmt
from edgepack.results.tune_plot import tune_plot

if TYPE_CHECKING:
    from edgepack.results.store import RunRecord

CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 24px auto; max-width: 1100px; padding: 0 12px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin: 28px 0 6px; }
p.meta, figcaption { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
td.fail { color: #c44e52; font-weight: bold; } td.ok { color: #55a868; }
figure { margin: 8px 0 20px; } svg.plot { display: block; background: #fff; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #333; } svg .axis line, svg .axis path { stroke: #999; }
svg .axis line.grid { stroke: #e6e6e6; } svg .note { fill: #666; } svg .title { font-weight: bold; fill: #333; }
code { font: 12px ui-monospace, monospace; background: #f4f4f4; padding: 0 3px; }
"""


def caption_html(text: str) -> str:
    """Escape a caption, writing `command` spans as code rather than with their backticks."""
    return re.sub(r"`([^`]+)`", lambda m: f"<code>{m.group(1)}</code>", esc(text))


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
            (fmt(s["model_bytes"] / 1024) if s["model_bytes"] is not None else "-", ""),
            (fmt(s["load_cold_ms"]), ""), (fmt(s["latency_p50_ms"]), ""), (fmt(s["latency_p90_ms"]), ""),
            (fmt(s["peak_memory_mb"]), ""),
            (f"{100 * s['accuracy']:.2f} %" if s["accuracy"] is not None else "-", ""),
            ("✓" if run.passed else "✗", "ok" if run.passed else "fail"),
        ]
        rows.append("<tr>" + "".join(f'<td class="{c}">{esc(v)}</td>' for v, c in cells) + "</tr>")
    header = "".join(f'<th class="{"l" if i < 5 else ""}">{esc(h)}</th>' for i, h in enumerate(head))
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
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{len(runs)} run{"s" if len(runs) != 1 else ""}, written {esc(now)} by edgepack {esc(__version__)}.</p>',
    ]
    if not runs:
        parts.append("<p>No runs stored yet: measure something with <code>edgepack bench BUNDLE</code>.</p>")
    else:
        parts.append(_runs_table(runs))
        for heading, svg, caption in sections:
            if svg:
                parts.append(f"<h2>{esc(heading)}</h2><figure>{svg}" + (f"<figcaption>{caption_html(caption)}</figcaption>" if caption else "") + "</figure>")
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
