"""`edgepack report` and `edgepack compare`: read the results history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgepack.cli.options import Db, Json
from edgepack.cli.render import console, plain



def _history_path(db: Optional[Path]) -> Path:
    from edgepack.results.store import default_db_path

    return Path(db) if db is not None else default_db_path()


def report_command(
    last: int = typer.Option(20, "--last", "-n", min=1, help="Show the newest N runs."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Only runs of this target profile."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Only runs on this device."),
    html: Optional[Path] = typer.Option(None, "--html", metavar="FILE", dir_okay=False, help="Write one self-contained HTML file with plots."),
    as_json: Json = False,
    db: Db = None,
) -> None:
    """List stored bench runs as a table, as JSON, or as an HTML report with plots."""
    from edgepack.results.store import open_store

    if html is not None and html.suffix.lower() not in (".html", ".htm"):  # `--html model.keras` would overwrite the model
        from edgepack.errors import EdgepackError

        raise EdgepackError(f"--html {html}: not an .html file", hint=f"name the report's file, e.g. --html {html.with_suffix('.html').name}")
    path = _history_path(db)
    runs = []
    if path.exists():  # reading must not create an empty history
        with open_store(path) as history:
            runs = history.runs(last=last, target=target, device=device)
    if html is not None:
        from edgepack.results.html import write_html

        write_html(html, runs)
        console.print(f"wrote {plain(html)} ({len(runs)} run{'s' if len(runs) != 1 else ''})", highlight=False)
        return
    if as_json:
        from edgepack.results.report import runs_json

        typer.echo(json.dumps(runs_json(runs), indent=2))
        return
    if not runs:
        what = " matching " + ", ".join(f"{k} {v}" for k, v in (("target", target), ("device", device)) if v) if target or device else ""
        console.print(f"no runs{plain(what)} in {plain(path)}", highlight=False)
        console.print("[yellow]hint:[/] `edgepack bench BUNDLE` measures a bundle and stores the result", highlight=False)
        return
    from edgepack.results.report import runs_table

    console.print(runs_table(runs, f"runs ({path})", wide=console.width >= 120))


def compare_command(
    run_a: str = typer.Argument(..., metavar="RUN_A", help="The run to compare against: #12, 12, last or last~1."),
    run_b: str = typer.Argument(..., metavar="RUN_B", help="The run compared with it."),
    as_json: Json = False,
    db: Db = None,
) -> None:
    """Show two stored runs side by side with deltas and a noise-aware verdict."""
    from edgepack.results.compare import compare_runs
    from edgepack.results.report import comparison_table, when
    from edgepack.results.store import ResultsError, open_store

    path = _history_path(db)
    if not path.exists():
        raise ResultsError(f"no results history at {path}", hint="measure something first (edgepack bench BUNDLE), or pass --db FILE")
    with open_store(path) as history:
        a, b = history.resolve(run_a), history.resolve(run_b)
    cmp = compare_runs(a, b)
    if as_json:
        typer.echo(json.dumps(cmp.to_dict(), indent=2))
        return
    for name, run in (("A", a), ("B", b)):
        console.print(
            f"[bold]{name}[/] {plain(run.label)}  {plain(run.target)} ({plain(run.format)} {plain(run.precision)}) on {plain(run.device)}, "
            f"{plain(when(run.created))}, bundle {plain(run.bundle_sha256[:12])}",
            highlight=False,
        )
    if cmp.notes:
        console.print("   " + plain("; ".join(cmp.notes)), highlight=False)
    console.print(comparison_table(cmp))
    word = cmp.latency.word
    if word in ("faster", "slower"):
        headline = f"B is [bold]{word}[/] than A"
    elif word == "no change":
        headline = "[bold]no change[/] in latency"
    else:
        headline = f"latency: [bold]{word}[/]"
    console.print(f"verdict: {headline}: {plain(cmp.latency.reason)}", highlight=False)
    others = [f"{r.measure} {r.verdict.word} ({r.verdict.reason})" for r in cmp.rows if r.verdict and r.verdict.changed and r.verdict is not cmp.latency]
    if others:
        console.print("   also: " + plain("; ".join(others)), highlight=False)
