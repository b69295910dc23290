"""Show stored runs: rich tables for the terminal, plain dicts for ``--json``.

`runs_table` lists runs; `comparison_table` shows two runs side by side with the deltas and
the verdicts of `edgepack.results.compare`; `gate_table` shows the regression gate's rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from rich.table import Table

    from edgepack.results.compare import Comparison, GateRow
    from edgepack.results.store import RunRecord


def _num(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def when(created: str) -> str:
    """Show a stored ISO time in local time, to the minute: ``26-11-22 09:12``."""
    try:
        return datetime.fromisoformat(created).astimezone().strftime("%y-%m-%d %H:%M")
    except ValueError:
        return created


def runs_json(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Return each run's summary (headline figures, no raw samples), oldest first."""
    return [run.summary() for run in runs]


def runs_table(runs: list[RunRecord], title: str = "runs", wide: bool = True) -> Table:
    """Return a table of RUNS, one row each: where, what, and the headline figures.

    Args:
        wide: every column; else the ones that fit 80 columns (the JSON has everything).
    """
    from rich import box
    from rich.table import Table

    from edgepack.markup import plain

    table = Table(title=plain(title), title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    columns = [("run", "l"), ("when", "l"), ("device", "f"), ("target", "f")] + ([("build", "f")] if wide else []) + [("KB", "r")]
    columns += [("cold ms", "r"), ("p50 ms", "r")] if wide else []
    columns += [("p90 ms", "r"), ("peak MB", "r"), ("acc. %", "r")]
    columns += [("top-1 %", "r")] if wide else []
    columns += [("ok", "c")]
    for name, kind in columns:
        justify = {"r": "right", "c": "center"}.get(kind, "left")
        table.add_column(name, justify=justify, overflow="fold", no_wrap=kind != "f")
    for run in runs:
        s = run.summary()
        cells = {
            "run": plain(run.label),
            "when": plain(when(run.created) if wide else when(run.created)[3:]),
            "device": plain(run.device),
            "target": plain(run.target),
            "build": plain(f"{run.format} {run.precision}"),
            "KB": _num(s["model_bytes"] / 1024 if s["model_bytes"] is not None else None, 1),
            "cold ms": _num(s["load_cold_ms"]),
            "p50 ms": _num(s["latency_p50_ms"], 3),
            "p90 ms": _num(s["latency_p90_ms"], 3),
            "peak MB": _num(s["peak_memory_mb"], 1),
            "acc. %": _num(100 * s["accuracy"] if s["accuracy"] is not None else None, 2),
            "top-1 %": _num(100 * s["top1_vs_host"] if s["top1_vs_host"] is not None else None, 1),
            "ok": "[green]✓[/]" if run.passed else "[red]✗[/]",
        }
        table.add_row(*[cells[name] for name, _ in columns])
    return table


_COLOURS = {"faster": "green", "smaller": "green", "less": "green", "higher": "yellow", "lower": "yellow",
            "slower": "red", "larger": "red", "more": "red", "unclear": "yellow"}


def _verdict(word: str) -> str:
    colour = _COLOURS.get(word)
    return f"[{colour}]{word}[/]" if colour else word


def comparison_table(cmp: Comparison) -> Table:
    """Return run A and run B side by side: value, delta, relative change and verdict per measure."""
    from rich.table import Table

    from edgepack.markup import plain

    a, b = cmp.a, cmp.b
    table = Table(header_style="bold", caption="load times: medians of the fresh-process loads", caption_justify="left")
    table.add_column("measure", no_wrap=True)
    table.add_column(f"A {plain(a.label)}", justify="right", no_wrap=True)
    table.add_column(f"B {plain(b.label)}", justify="right", no_wrap=True)
    table.add_column("Δ", justify="right", no_wrap=True)
    table.add_column("Δ %", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for row in cmp.rows:
        digits = 3 if row.unit == "ms" and "latency" in row.measure else 1 if row.unit in ("KB", "MB", "/s") else 2
        rel = row.relative
        table.add_row(
            f"{row.measure} {row.unit}",
            _num(row.a, digits),
            _num(row.b, digits),
            "-" if row.delta is None else f"{row.delta:+.{digits}f}",
            "-" if rel is None else f"{100 * rel:+.1f}%",
            _verdict(row.verdict.word) if row.verdict else "",
        )
    return table


def gate_table(rows: list[GateRow], baseline_label: str, current_label: str) -> Table:
    """Return the regression gate: each gated measure, its change against the baseline, and the limit."""
    from rich.table import Table

    from edgepack.markup import plain

    table = Table(title=f"regression gate: {plain(current_label)} against baseline {plain(baseline_label)}", title_justify="left", header_style="bold")
    table.add_column("measure")
    table.add_column("baseline", justify="right")
    table.add_column("this run", justify="right")
    table.add_column("change", justify="right")
    table.add_column("limit", justify="right")
    table.add_column("")
    for row in rows:
        digits = 3 if row.unit == "ms" else 1
        change = row.change
        status = "-" if change is None else "[red]regressed ✗[/]" if row.regressed else "[green]ok ✓[/]"
        table.add_row(
            f"{row.measure} ({row.unit})",
            _num(row.baseline, digits),
            _num(row.current, digits),
            "-" if change is None else f"{100 * change:+.1f}%",
            f"+{100 * row.limit:g}%",
            status,
        )
    return table
