"""`edgepack bench` and `edgepack deploy`: measure bundles on a device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from edgepack.cli.render import console, err_console, fmt_num
from edgepack.errors import GateFailed

DEVICE = typer.Option("local", "--device", "-d", help="Device name from `edgepack devices list` (default: this machine).")
INVENTORY = typer.Option(None, "--inventory", help="Device inventory file [default: the user config directory's].")
RUNS = typer.Option(None, "--runs", help="Timed runs [default: the profile's bench.runs].")
WARMUP = typer.Option(None, "--warmup", help="Untimed warm-up runs [default: the profile's].")
THREADS = typer.Option(None, "--threads", help="Interpreter threads [default: the profile's runtime.threads].")
MIN_SECONDS = typer.Option(None, "--min-seconds", help="Keep timing until this many seconds have passed [default: the profile's].")
COLD_LOADS = typer.Option(None, "--cold-loads", help="Fresh-process loads with the page cache evicted [default: the profile's].")
AS_JSON = typer.Option(False, "--json", help="Print the result as JSON.")


def _options(runs, warmup, threads, min_seconds, cold_loads):
    from edgepack.bench import BenchOptions

    return BenchOptions(runs=runs, warmup=warmup, threads=threads, min_seconds=min_seconds, cold_loads=cold_loads)


def _step(message: str) -> None:
    err_console.print(f"[dim]… {message}[/]", highlight=False)


def bench_command(
    bundle: Path = typer.Argument(..., help="A bundle directory written by `edgepack build`."),
    device: str = DEVICE,
    runs: Optional[int] = RUNS,
    warmup: Optional[int] = WARMUP,
    threads: Optional[int] = THREADS,
    min_seconds: Optional[float] = MIN_SECONDS,
    cold_loads: Optional[int] = COLD_LOADS,
    inventory: Optional[Path] = INVENTORY,
    as_json: bool = AS_JSON,
) -> None:
    """Measure a bundle on a device: load time, latency, memory, and a check of its answers."""
    from edgepack.bench import bench

    result = bench(bundle, device, _options(runs, warmup, threads, min_seconds, cold_loads), inventory, None if as_json else _step)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        render_bench(result)
    _gate([result])


def deploy_command(
    model: Path = typer.Argument(..., help="Keras .keras/.h5 file or SavedModel directory."),
    targets: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Target profile; repeat to compare targets [default: the device's target]."),
    device: str = DEVICE,
    data: Optional[Path] = typer.Option(None, "--data", help="Calibration/evaluation data: .npz (x, y), .npy or an image folder."),
    runs: Optional[int] = RUNS,
    warmup: Optional[int] = WARMUP,
    threads: Optional[int] = THREADS,
    min_seconds: Optional[float] = MIN_SECONDS,
    cold_loads: Optional[int] = COLD_LOADS,
    inventory: Optional[Path] = INVENTORY,
    as_json: bool = AS_JSON,
) -> None:
    """Build MODEL for each target (using the build cache) and measure it on a device."""
    from edgepack.bench import bench
    from edgepack.build.pipeline import build
    from edgepack.cli.build import _show_stage, build_summary, render_build
    from edgepack.device.inventory import get_device
    from edgepack.errors import EdgepackError

    if not targets:
        default = get_device(device, inventory).target
        if not default:
            raise EdgepackError(
                f"no target given and device '{device}' has none",
                hint=f"pass --target NAME, or set one: edgepack devices add {device} ... --target NAME",
            )
        targets = [default]
    options = _options(runs, warmup, threads, min_seconds, cold_loads)
    builds, results = [], []
    for target in targets:
        built = build(model, target, data, on_stage=None if as_json else _show_stage)
        builds.append(built)
        if not as_json:
            render_build(built)
        if not built.passed:
            raise GateFailed(
                f"build for {target} missed its budget: " + "; ".join(built.failures),
                hint=f"nothing was measured; the bundle is kept in {built.bundle}/",
            )
        results.append(bench(built.bundle, device, options, inventory, None if as_json else _step))
        if not as_json:
            render_bench(results[-1])
    if as_json:
        typer.echo(json.dumps([{"build": build_summary(b), "bench": r.to_dict()} for b, r in zip(builds, results)], indent=2))
    elif len(results) > 1:
        render_side_by_side(results)
    _gate(results)


def _gate(results) -> None:
    failed = [(r, f) for r in results for f in r.budget_failures]
    if failed:
        raise GateFailed("; ".join(f"{r.manifest.target} on {r.device}: {f}" for r, f in failed), hint="the figures are in the table above")


def _median(values) -> float | None:
    import numpy as np

    return float(np.median(values)) if values else None


def render_bench(result) -> None:
    """Print one bench result: what ran where, then the figures with their budgets."""
    from rich.table import Table

    r, m = result.report, result.manifest
    budgets = m.profile.get("budgets", {})
    s, rt = r.system, r.runtime
    console.print(f"[bold]{result.bundle.name}[/] on [bold]{result.device}[/] ({m.format} {m.precision})", highlight=False)
    if rt:
        extras = ", ".join(rt.delegates or rt.providers or []) or "no delegate"
        console.print(f"   runtime: {rt.name} {rt.version} ({extras})", highlight=False)
    if s:
        console.print(f"   system: {s.arch}, {s.cpu_model or 'cpu'}, {s.cores} cores, {fmt_num(s.memory_total_mb, 0)} MB, {s.os}, Python {s.python}", highlight=False)
    for note in r.notes:
        console.print(f"   [yellow]note:[/] {note}", highlight=False)
    table = Table(show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("budget", justify="right")

    def budget(value, limit):
        if limit is None or value is None:
            return ""
        return f"[green]≤ {limit:g} ✓[/]" if value <= limit else f"[red]≤ {limit:g} ✗[/]"

    load = r.load
    if load:
        table.add_row("load, cold (median)", f"{fmt_num(_median(load.cold_ms))} ms" + ("" if load.cold_evicted else " (cache not evicted)"), "")
        table.add_row("load, warm (median)", f"{fmt_num(_median(load.warm_ms))} ms", "")
    table.add_row("first inference", f"{fmt_num(r.first_inference_ms)} ms", "")
    lat = r.latency_ms
    if lat:
        table.add_row("latency p50", f"{lat.p50:.3f} ms", "")
        table.add_row("latency p90", f"{lat.p90:.3f} ms", budget(lat.p90, budgets.get("max_p90_latency_ms")))
        table.add_row("latency p99", f"{lat.p99:.3f} ms", "")
        table.add_row("latency mean ± std", f"{lat.mean:.3f} ± {lat.std:.3f} ms ({len(lat.samples)} runs)", "")
    table.add_row("throughput", f"{fmt_num(r.throughput_per_s, 1)} /s", "")
    mem = r.memory
    if mem:
        table.add_row("peak memory", f"{mem.peak_rss_mb:.1f} MB (+{mem.delta_mb:.1f} over runtime)", budget(mem.peak_rss_mb, budgets.get("max_peak_memory_mb")))
    if r.check:
        agree = f"top-1 {100 * r.check.top1_agreement:.1f}%, " if r.check.top1_agreement is not None else ""
        table.add_row("answers vs host", f"{agree}max |err| {r.check.max_abs_error:.3g} ({r.check.n_samples} samples)", "")
    p = result.push
    table.add_row("push", f"{p.files_sent} files, {p.bytes_sent / 1024:.1f} KB sent, {p.files_skipped} already there", "")
    console.print(table)
    if result.report_path:
        console.print(f"   report: {result.report_path}", highlight=False)


def render_side_by_side(results) -> None:
    """Print several bench results as one table, a column per target."""
    from rich.table import Table

    table = Table(title="side by side", header_style="bold")
    table.add_column("measure")
    for r in results:
        table.add_column(f"{r.manifest.target}\n{r.manifest.precision}", justify="right")
    rows = {
        "model KB": lambda r: f"{next(f.bytes for f in r.manifest.files if f.path == r.manifest.artifact) / 1024:.1f}",
        "accuracy": lambda r: fmt_num(100 * r.manifest.fidelity["accuracy_artifact"], 2) + " %" if r.manifest.fidelity.get("accuracy_artifact") is not None else "-",
        "load cold ms": lambda r: fmt_num(_median(r.report.load.cold_ms)),
        "latency p50 ms": lambda r: f"{r.report.latency_ms.p50:.3f}",
        "latency p90 ms": lambda r: f"{r.report.latency_ms.p90:.3f}",
        "peak MB": lambda r: f"{r.report.memory.peak_rss_mb:.1f}",
        "top-1 vs host": lambda r: fmt_num(100 * r.report.check.top1_agreement, 1) + " %" if r.report.check and r.report.check.top1_agreement is not None else "-",
    }
    for name, value in rows.items():
        table.add_row(name, *[value(r) for r in results])
    console.print(table)
