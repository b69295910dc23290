"""`edgepack tune`: search the build settings with the device in the loop, and write the best as a profile."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from edgepack.cli.options import ColdLoads, Db, Inventory, Json, MinSeconds, Runs, Warmup
from edgepack.cli.render import console, err_console, fmt_num, live_console, plain


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
    workers: int = typer.Option(1, "--workers", help="Builds at once (benches on the device are always one at a time)."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help="Build on this Ray cluster (host:port); needs edgepack[ray]."),
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

    progress = _Progress(as_json, trials)
    with progress:
        result = tune(
            model, target, data, device, trials, timeout, sampler, tuple(objective or DEFAULT_OBJECTIVES), study, save_as,
            eval_data, train_data, inventory, db, BenchOptions(runs=runs, warmup=warmup, min_seconds=min_seconds, cold_loads=cold_loads),
            on_trial=progress.finished, workers=workers, ray_address=ray, on_start=progress.started, on_bench=progress.benching,
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


class _Progress:
    """What a running study shows on stderr: a live table of its trials on a terminal (each running
    trial building or benching, with the step and the seconds it has taken; "trial k of n" in the
    title), a line per finished trial elsewhere."""

    def __init__(self, quiet: bool, trials: int = 0):
        self.quiet, self.trials = quiet, trials
        self.rows: dict[int, tuple[str, ...]] = {}
        self.running: dict[int, tuple[str, float]] = {}  # trial -> (what it does now, since when)
        self.live = None

    def __enter__(self) -> "_Progress":
        terminal = None if self.quiet else live_console(err_console)  # keeps drawing while a build silences stderr
        if terminal is not None:
            from rich.live import Live

            self.live = Live(self, console=terminal, refresh_per_second=4, transient=False, redirect_stdout=False, redirect_stderr=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            if self.live.console is not err_console:
                self.live.console.file.close()

    def started(self, number: int, params: dict) -> None:
        self.rows[number] = (str(number), plain(_params(params)), "building", "", "", "")
        self.running[number] = ("building", time.monotonic())
        self._show()

    def benching(self, number: int, step: str) -> None:
        """A trial's bench moved on a step (connecting, pushing, measuring)."""
        since = self.running[number][1] if number in self.running and self.running[number][0].startswith("benching") else time.monotonic()
        self.running[number] = (f"benching: {step}", since)
        self._show()

    def finished(self, t) -> None:
        self.running.pop(t.number, None)
        v = t.values
        if t.state != "complete":
            state = "[red]failed[/]: " + plain(t.failures[0] if t.failures else "")
        elif t.same_as is not None:
            state = f"= trial {t.same_as}"
        else:
            state = "[green]✓[/]" if t.meets_budgets else "[yellow]✗ budget[/]: " + plain(t.failures[0] if t.failures else "")
        accuracy = v.get("accuracy") if v.get("accuracy") is not None else v.get("top1_agreement")
        self.rows[t.number] = (str(t.number), plain(_params(t.params)), state, fmt_num(v.get("p90_ms"), 3),
                               fmt_num(v.get("size_kb"), 1), f"{100 * accuracy:.2f} %" if accuracy is not None else "-")
        if self.quiet:
            return
        if self.live is None:
            number, settings, state, p90, size, acc = self.rows[t.number]
            err_console.print(f"trial {number} {settings}: {state}, p90 {p90} ms, {size} KB, accuracy {acc}", highlight=False)
        self._show()

    def _show(self) -> None:
        if self.live is not None:
            self.live.refresh()

    def __rich__(self):
        return self._table()

    def title(self) -> str:
        """"trial k of n": k the latest trial started (trials are numbered from 0), n the study's trials."""
        if not self.rows:
            return "edgepack tune"
        return f"edgepack tune: trial {max(self.rows) + 1} of {self.trials}" if self.trials else "edgepack tune"

    def _table(self):
        from rich.table import Table

        table = Table(title=self.title(), title_justify="left", header_style="bold")
        for column in ("trial", "settings", "state", "p90 ms", "size KB", "accuracy"):
            table.add_column(column, justify="left" if column in ("settings", "state") else "right")
        now = time.monotonic()
        for number in sorted(self.rows):
            row = self.rows[number]
            if number in self.running:
                doing, since = self.running[number]
                row = (row[0], row[1], f"[cyan]{plain(doing)}[/] {now - since:.0f} s", *row[3:])
            table.add_row(*row)
        return table


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
