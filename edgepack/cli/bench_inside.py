"""What `edgepack bench` shows of the device's inside: top operators, nodes per provider, the device's gate,
GPU memory, sustained load and advice from measurement. `bench` prints these under its main table."""

from __future__ import annotations

import re

import typer

from edgepack.cli.render import console, fmt_num, plain

TOP_OPERATORS = 8
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_SUSTAINED_S = 24 * 3600.0


def parse_duration(text: str | None, option: str = "--sustained") -> float | None:
    """Read '10m', '90s', '1.5h' or plain seconds; None for None.

    Raises:
        typer.BadParameter: not a duration, or not in (0, 24h].
    """
    if text is None:
        return None
    m = DURATION.match(text)
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration: write e.g. 10m, 90s or 1h", param_hint=option)
    seconds = float(m.group(1)) * UNIT_S[m.group(2)]
    if not 0 < seconds <= MAX_SUSTAINED_S:
        raise typer.BadParameter(f"{text!r}: give more than 0 and at most 24h", param_hint=option)
    return seconds


def inside_rows(table, report, budgets) -> None:
    """Rows for the main table: nodes per provider, the device's gate, GPU memory."""
    ops = getattr(report, "operators", None)  # reports from before protocol 2 have none of these figures
    if ops is not None and ops.by_provider:
        split = ", ".join(f"{plain(p)} {s.nodes}" for p, s in sorted(ops.by_provider.items(), key=lambda kv: -kv[1].nodes))
        fraction = f"{100 * ops.accelerated_fraction:.0f}% off the CPU: " if ops.accelerated_fraction is not None else ""
        least = budgets.min_accelerated_fraction
        mark = ""
        if least is not None and ops.accelerated_fraction is not None:
            mark = f"[green]≥ {least:.0%} ✓[/]" if ops.accelerated_fraction >= least else f"[red]≥ {least:.0%} ✗[/]"
        table.add_row("nodes per provider", f"{fraction}{split}", mark)
    check = report.check
    if check is not None and getattr(check, "passed", None) is not None:
        worst = [o for o in check.outputs if o.kind == "dense" and o.sqnr_db is not None]
        figure = f"SQNR {min(o.sqnr_db for o in worst):.1f} dB, cosine {min(o.cosine for o in worst):.4f}" if worst else ""
        table.add_row("answers vs build's gate", figure or ("top-1 agrees" if check.passed else "top-1 disagrees"),
                      "[green]passes ✓[/]" if check.passed else "[red]fails ✗[/]")
    gpu = getattr(report.memory, "gpu", None) if report.memory else None
    if gpu is not None:
        what = "unified memory (growth)" if gpu.unified else "GPU memory (process)"
        value = f"{fmt_num(gpu.process_mb, 1)} MB ({plain(gpu.source or 'not measured')})" if gpu.process_mb is not None else "not measured"
        limit = budgets.max_peak_memory_mb
        mark = "" if limit is None or gpu.process_mb is None else (f"[green]≤ {limit:g} ✓[/]" if gpu.process_mb <= limit else f"[red]≤ {limit:g} ✗[/]")
        table.add_row(what, value, mark)


def render_inside(result) -> None:
    """Under the main table: the top operators (or why there are none), sustained load, advice."""
    from rich.table import Table

    report = result.report
    ops = getattr(report, "operators", None)
    if ops is not None and ops.by_op_type:
        table = Table(title=f"top operators ({plain(ops.source)}, ms per run)", header_style="bold", title_justify="left")
        for name, justify in (("op type", "left"), ("nodes", "right"), ("ms", "right"), ("share", "right"), ("slowest node", "left")):
            table.add_column(name, justify=justify)
        for g in ops.by_op_type[:TOP_OPERATORS]:
            node = next((n for n in ops.nodes if n.op_type == g.op_type), None)
            where = f"{plain(node.name)} ({plain(node.provider)})" if node else ""
            table.add_row(plain(g.op_type), str(g.count), f"{g.ms:.3f}", f"{100 * g.share:.1f}%" if g.share is not None else "", where)
        console.print(table)
    elif ops is not None and ops.unavailable:
        console.print(f"   [yellow]operators:[/] {plain(ops.unavailable)}", highlight=False)
    render_sustained(getattr(report, "sustained", None))
    gpu = getattr(report.memory, "gpu", None) if report.memory else None
    if gpu is not None:
        console.print(f"   [dim]GPU memory: {plain(gpu.method)}[/]", highlight=False)
    for line in getattr(result, "advice", []) or []:
        console.print(f"   [yellow]advice:[/] {plain(line)}", highlight=False)


def render_sustained(sustained) -> None:
    if sustained is None:
        return
    from rich.table import Table

    table = Table(title=f"sustained load, {sustained.duration_s:g} s", header_style="bold", title_justify="left")
    for name in ("t (s)", "runs", "p50 ms", "p90 ms", "temp °C", "CPU MHz"):
        table.add_column(name, justify="right")
    for i in sustained.intervals:
        table.add_row(f"{i.t_s:.0f}", str(i.runs), f"{i.p50_ms:.3f}", f"{i.p90_ms:.3f}", fmt_num(i.temp_c, 1), fmt_num(i.freq_mhz, 0))
    console.print(table)
    if sustained.slowdown:
        console.print(f"   [red]slowdown:[/] last p50 is {sustained.slowdown_ratio:.2f}x the first" if sustained.slowdown_ratio else "   [red]slowdown:[/] the last interval is slower than the first", highlight=False)
    for word in (sustained.throttled_start, sustained.throttled_end):
        if word is not None and word.conditions:
            console.print(f"   [yellow]throttling ({word.word}):[/] {plain(', '.join(word.conditions))}", highlight=False)
    for note in sustained.notes:
        console.print(f"   [yellow]note:[/] {plain(note)}", highlight=False)
