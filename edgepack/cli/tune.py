"""`edgepack tune`: search the build settings with the device in the loop, and write the best as a profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from edgepack.cli.options import ColdLoads, Db, Inventory, Json, MinSeconds, Runs, Warmup
from edgepack.cli.render import console, err_console, fmt_num, plain


def tune_command(
    model: Path = typer.Argument(..., help="Keras .keras/.h5 file, SavedModel directory or .onnx file."),
    target: str = typer.Option(..., "--target", "-t", help="The target profile to tune."),
    device: str = typer.Option("local", "--device", "-d", help="The device every trial is measured on."),
    data: Optional[Path] = typer.Option(None, "--data", help="Calibration/evaluation data: .npz (x, y), .npy or an image folder."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Separate evaluation data."),
    train_data: Optional[Path] = typer.Option(None, "--train-data", help="Labelled data to fine-tune on after pruning."),
    trials: int = typer.Option(20, "--trials", help="Trials in the study, counting those a previous run finished."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1.0, help="Start no trial after this many seconds."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe, nsga2, random or grid."),
    objective: Optional[List[str]] = typer.Option(None, "--objective", help="Minimise: p90, size, memory (repeat) [default: p90 and size]."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name [default: from the model's hash, the target and the device]."),
    save_as: Optional[str] = typer.Option(None, "--save-as", help="Name of the tuned profile [default: <target>-tuned]."),
    runs: Runs = None,
    warmup: Warmup = None,
    min_seconds: MinSeconds = None,
    cold_loads: ColdLoads = None,
    inventory: Inventory = None,
    db: Db = None,
    as_json: Json = False,
) -> None:
    """Find the fastest build of MODEL for a target that meets its budgets, measured on the device; write it as a profile."""
    from edgepack.benchmark import BenchOptions
    from edgepack.tuning.study import DEFAULT_OBJECTIVES, tune

    result = tune(
        model, target, data, device, trials, timeout, sampler, tuple(objective or DEFAULT_OBJECTIVES), study, save_as,
        eval_data, train_data, inventory, db, BenchOptions(runs=runs, warmup=warmup, min_seconds=min_seconds, cold_loads=cold_loads),
        on_trial=None if as_json else _show_trial,
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        if result.chosen is None:
            raise no_trial_within_budgets(result)
        return
    render_tune(result)


def no_trial_within_budgets(result):
    from edgepack.errors import GateFailed

    return GateFailed(
        f"no trial of {result.study} met every budget of {result.target}",
        hint="run more trials (--trials), widen the search (the profile's tune: section), or relax a budget",
    )


def _show_trial(t) -> None:
    v = t.values
    if t.state != "complete":
        err_console.print(f"[red]✗[/] trial {t.number} {plain(_params(t.params))}: {plain(t.failures[0] if t.failures else 'failed')}", highlight=False)
        return
    mark = "[green]✓[/]" if t.meets_budgets else "[yellow]✗ budget[/]"
    err_console.print(
        f"{mark} trial {t.number} {plain(_params(t.params))}: p90 {fmt_num(v.get('p90_ms'), 3)} ms, {fmt_num(v.get('size_kb'), 1)} KB",
        highlight=False,
    )


def _params(params: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items())


def render_tune(result) -> None:
    """The Pareto front as a table, then the chosen trial and where its profile is."""
    from rich.table import Table

    front = [t for t in result.trials if t.number in result.pareto]
    table = Table(title=f"Pareto front of {plain(result.study)} ({len(result.trials)} trials)", title_justify="left", header_style="bold")
    for column in ("trial", "settings", "p90 ms", "size KB", "peak MB", "accuracy"):
        table.add_column(column, justify="left" if column == "settings" else "right")
    for t in front:
        v = t.values
        accuracy = v.get("accuracy") if v.get("accuracy") is not None else v.get("top1_agreement")
        table.add_row(
            f"{'* ' if result.chosen and t.number == result.chosen.number else ''}{t.number}", plain(_params(t.params)),
            fmt_num(v.get("p90_ms"), 3), fmt_num(v.get("size_kb"), 1), fmt_num(v.get("peak_mb"), 1),
            f"{100 * accuracy:.2f} %" if accuracy is not None else "-",
        )
    console.print(table)
    if result.chosen is None:
        raise no_trial_within_budgets(result)
    console.print(f"chosen: trial {result.chosen.number}, written as {plain(str(result.profile))} (bundle {plain(result.chosen.bundle)})", highlight=False)
