"""`edgepack build`: turn a trained model into a verified bundle for a target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgepack.cli.options import Json
from edgepack.cli.render import LiveStatus, console, err_console, plain, shown_path
from edgepack.errors import GateFailed


def build_command(
    model: Path = typer.Argument(..., help="Keras .keras/.h5 file, SavedModel directory, .onnx file, PyTorch .pt2 file or pkg.module:factory."),
    target: str = typer.Option(..., "--target", "-t", help="Target profile name (edgepack targets list)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Calibration/evaluation data: .npz (x, y), .npy or an image folder."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Separate evaluation data (same formats)."),
    train_data: Optional[Path] = typer.Option(None, "--train-data", help="Labelled data to fine-tune on after pruning [default: the calibration data]."),
    out: Optional[Path] = typer.Option(None, "--out", help="Bundle directory [default: build/<model>-<target>]."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build even if an identical build is cached."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and build nothing."),
    synthetic_calibration: bool = typer.Option(
        False, "--synthetic-calibration", help="Calibrate int8 on random inputs when there is no data (lower accuracy)."
    ),
    as_json: Json = False,
    explain: bool = typer.Option(False, "--explain", help="Show the layers quantization hurts most, even when the build passes."),
    input_shape: Optional[list[str]] = typer.Option(
        None, "--input-shape", help="Fix an ONNX input's dynamic dimensions: NAME:1x3x224x224 (repeatable)."
    ),
) -> None:
    """Prune, quantize and convert MODEL for a target, verify it, and write a bundle."""
    from edgepack.builder.plan import plan_build
    from edgepack.model.input_shape import parse_input_shapes

    shapes = parse_input_shapes(input_shape or [])
    plan = plan_build(model, target, data, eval_data, out, synthetic_calibration, shapes, train_data, explain=explain)
    if dry_run:
        if as_json:
            stages = [{"name": s.name, "detail": s.detail} for s in plan.stages]
            typer.echo(json.dumps({"target": target, "out": str(plan.out), "stages": stages}, indent=2))
            return
        console.print(f"plan for [bold]{plain(model)}[/] -> [bold]{plain(target)}[/] (nothing is built)", highlight=False)
        for i, s in enumerate(plan.stages, 1):
            console.print(f"  {i}. {s.name:<13} {plain(s.detail)}", highlight=False)
        return

    from edgepack.builder.pipeline import run_planned

    view = None if as_json else StageView(err_console)
    try:
        result = run_planned(plan, use_cache=not no_cache, on_stage=view.show if view else None)
    finally:
        if view is not None:
            view.close()
    if as_json:
        typer.echo(json.dumps(build_summary(result), indent=2))
    else:
        render_build(result, explain=explain)
    if not result.passed:
        raise GateFailed(
            f"build for {target} missed its budget: " + "; ".join(result.failures),
            hint=f"the bundle is kept for inspection in {result.bundle}/ (status: failed)",
        )


def show_stage(name: str, detail: str, seconds: float | None) -> None:
    """One line as a stage starts and one as it ends, for a log: nothing for a counted step (an epoch, an attempt)."""
    if seconds is None and getattr(detail, "kind", ""):
        return
    if seconds is None:
        err_console.print(f"[dim]… {name:<13} {plain(detail)}[/]", highlight=False)
    else:
        err_console.print(f"[green]✓[/] {name:<13} {seconds:6.2f} s", highlight=False)


class StageView:
    """What a build shows while it runs. On a terminal: the running stage on a line redrawn in place
    with its elapsed time, and what it does now (epoch k of n and the validation loss while
    fine-tuning, attempt k of n and what it tries while recovering); a line that stays as each stage
    ends, and one per recovery attempt. Off a terminal: `show_stage`'s lines, nothing redrawn."""

    def __init__(self, con):
        self.status = LiveStatus(con)

    def show(self, name: str, detail: str, seconds: float | None) -> None:
        if not self.status.active:
            show_stage(name, detail, seconds)
            return
        if seconds is not None:
            self.status.print(f"[green]✓[/] {name:<13} {seconds:6.2f} s")
            return
        if name != self.status.label:
            self.status.start(name, str(detail))
        else:
            self.status.update(str(detail))
        if getattr(detail, "kind", "") == "attempt":
            self.status.print(f"[dim]  {name:<13} {plain(detail)}[/]")

    def close(self) -> None:
        self.status.close()


def build_summary(result) -> dict:
    m = result.manifest
    return {
        "bundle": str(result.bundle),
        "status": m.status.value,
        "cached": result.cached,
        "target": m.target,
        "format": m.format.value,
        "precision": m.precision.value,
        "artifact_bytes": result.size_bytes,
        "fidelity": m.fidelity.model_dump(mode="json"),
        "prune": m.build.get("prune_result"),
        "facts": {k: v for k, v in m.facts.model_dump(mode="json").items() if v is not None},
        "notes": m.notes,
        "stage_seconds": result.stage_seconds,
        "peak_rss_mb": m.peak_rss_mb,
    }


def render_build(result, explain: bool = False) -> None:
    """Print a build's summary: what was made, how it compares with the original, where it is.

    The per-layer error table and the recovery attempts are shown with EXPLAIN, and always for a
    build that failed or needed recovery.
    """
    m = result.manifest
    f = m.fidelity
    status = "[green]ok[/]" if result.passed else "[red]FAILED[/]"
    cached = " (cache hit)" if result.cached else ""
    peak = f", build peak memory {m.peak_rss_mb:.0f} MB" if m.peak_rss_mb is not None else ""
    console.print(f"{status} {plain(m.target)}: {m.format.value} {m.precision.value}, {result.size_bytes / 1024:.1f} KB{peak}{cached}", highlight=False)
    parts = [f"{f.n_samples} samples"]
    if f.top1_agreement is not None:
        parts.append(f"top-1 agreement {100 * f.top1_agreement:.2f}%")
    if f.accuracy_original is not None:
        parts.append(f"accuracy {100 * f.accuracy_original:.2f}% -> {100 * f.accuracy_artifact:.2f}%")
    parts.append(f"max |err| {f.max_abs_error:.4g}")
    console.print("   verify: " + ", ".join(parts), highlight=False)
    for o in f.outputs:
        if o.kind == "dense" or len(f.outputs) > 1:  # a single class-scores output is the line above
            top1 = f", top-1 {100 * o.top1_agreement:.2f}%" if o.top1_agreement is not None else ""
            mark = "" if o.passed else " [red]✗[/]"
            console.print(
                f"   output {plain(o.name)} ({o.kind}): SQNR {o.sqnr_db:.1f} dB, cosine {o.cosine:.4f}, "
                f"max err {100 * o.max_rel_error:.1f}% of its range{top1}{mark}",
                highlight=False,
            )
    if f.metric is not None:
        console.print(f"   verify.metric {plain(m.profile.verify.metric)}: {f.metric:.4g}", highlight=False)
    micro = m.facts.micro.model_dump(mode="json") if m.facts.micro else None
    if micro:  # a microcontroller build: does it fit, how big is the arena, how fast (estimates)
        from edgepack.micro.report import facts_lines, fit_table

        console.print(fit_table(micro))
        for line in facts_lines(micro):
            console.print(f"   {plain(line)}", highlight=False)
    pr = m.build.get("prune_result")
    if pr:
        console.print(
            f"   prune: params {pr['params_before']:,} -> {pr['params_after']:,}, sparsity {pr['sparsity']:.1%}",
            highlight=False,
        )
    quant = m.facts.quantization.model_dump(mode="json")
    if explain or not result.passed or quant.get("strategy", "plain") != "plain":
        render_quantization(quant)
    for note in m.notes:
        console.print(f"   [yellow]note:[/] {plain(note)}", highlight=False)
    console.print(f"   bundle: {plain(shown_path(result.bundle))}/", highlight=False)


def render_quantization(quant: dict) -> None:
    """Print the layers with the largest quantization error, and what recovery tried."""
    from rich.table import Table

    if quant.get("explain_error"):
        console.print(f"   [yellow]note:[/] no per-layer table: {plain(quant['explain_error'])}", highlight=False)
    if quant.get("layer_errors"):
        table = Table(title="layers with the largest quantization error", title_justify="left", header_style="bold")
        for col in ("layer", "op", "error", "measure"):
            table.add_column(col, justify="right" if col == "error" else "left")
        for e in quant["layer_errors"]:
            error = "overflow" if e["error"] is None else f"{e['error']:.3g}"  # JSON keeps no infinity
            table.add_row(plain(e["layer"]), plain(e["op"]), error, plain(e["measure"]))
        console.print(table)
    if len(quant.get("attempts", [])) > 1 or any(a.get("error") for a in quant.get("attempts", [])):
        table = Table(title="what was tried", title_justify="left", header_style="bold")
        for col in ("strategy", "top-1 agreement", "accuracy drop", "size KB", "result"):
            table.add_column(col, justify="left" if col in ("strategy", "result") else "right")
        for a in quant["attempts"]:
            pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
            size = "-" if a["size_bytes"] is None else f"{a['size_bytes'] / 1024:.1f}"
            result = "[green]meets the budgets[/]" if a["passed"] else f"[red]{plain(a['error'] or 'misses the gate')}[/]"
            table.add_row(plain(a["strategy"]), pct(a["top1_agreement"]), pct(a["accuracy_drop"]), size, result)
        console.print(table)
