"""`edgepack bench` and `edgepack deploy`: measure bundles on a device, or on several at once.

Exit codes: 2 when a device could not be measured (unreachable, agent failed; in a fleet run
the others are still measured, stored and summarised first), else 1 when a budget or the
regression gate (`--baseline RUN --max-regression 10%`) failed, else 0. A failed device wins
over a failed gate because the results are then incomplete: the gate has not seen everything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from edgepack.cli.render import console, err_console, fmt_num, plain, shown_path
from edgepack.errors import GateFailed

DEVICES = typer.Option(
    None, "--device", "-d",
    help="Device or device group from `edgepack devices list`; repeat to measure on several at once [default: local, this machine].",
)
MAX_CONNECTIONS = typer.Option(8, "--max-connections", min=1, help="With several devices: how many are connected and measured at once.")
DB = typer.Option(None, "--db", metavar="FILE", dir_okay=False, help="Results history database [default: history.sqlite3 in the user data directory].")
BASELINE = typer.Option(None, "--baseline", metavar="RUN", help="Gate against this stored run (#12, 12, last, last~1): exit 1 when p90 latency, peak memory or model size regress.")
MAX_REGRESSION = typer.Option(None, "--max-regression", metavar="PCT", help="With --baseline: the largest allowed increase [default: 10%].")
INVENTORY = typer.Option(None, "--inventory", help="Device inventory file [default: the user config directory's].")
RUNS = typer.Option(None, "--runs", min=1, help="Timed runs [default: the profile's bench.runs].")
WARMUP = typer.Option(None, "--warmup", min=0, help="Untimed warm-up runs [default: the profile's].")
THREADS = typer.Option(None, "--threads", min=1, help="Interpreter threads [default: the profile's runtime.threads].")
MIN_SECONDS = typer.Option(None, "--min-seconds", min=0.0, help="Keep timing until this many seconds have passed [default: the profile's].")
COLD_LOADS = typer.Option(None, "--cold-loads", min=0, help="Fresh-process loads with the page cache evicted [default: the profile's].")
AS_JSON = typer.Option(False, "--json", help="Print the result as JSON.")


def _options(runs, warmup, threads, min_seconds, cold_loads):
    from edgepack.bench import BenchOptions

    return BenchOptions(runs=runs, warmup=warmup, threads=threads, min_seconds=min_seconds, cold_loads=cold_loads)


def _step(message: str) -> None:
    err_console.print(f"[dim]… {plain(message)}[/]", highlight=False)


def bench_command(
    bundle: Path = typer.Argument(..., help="A bundle directory written by `edgepack build`."),
    devices: Optional[List[str]] = DEVICES,
    runs: Optional[int] = RUNS,
    warmup: Optional[int] = WARMUP,
    threads: Optional[int] = THREADS,
    min_seconds: Optional[float] = MIN_SECONDS,
    cold_loads: Optional[int] = COLD_LOADS,
    inventory: Optional[Path] = INVENTORY,
    max_connections: int = MAX_CONNECTIONS,
    db: Optional[Path] = DB,
    baseline: Optional[str] = BASELINE,
    max_regression: Optional[str] = MAX_REGRESSION,
    as_json: bool = AS_JSON,
) -> None:
    """Measure a bundle on a device (or several at once): load time, latency, memory, and a check of its answers."""
    from edgepack.bench import bench
    from edgepack.bundle import read_manifest
    from edgepack.device.inventory import resolve_devices

    if read_manifest(bundle).format == "tflite-micro" and not devices:
        _bench_micro(bundle, as_json)
        return
    names = resolve_devices(devices or ["local"], inventory)
    gate = _baseline(baseline, max_regression, db)  # before measuring: `last` means the last run before this one
    options = _options(runs, warmup, threads, min_seconds, cold_loads)
    if len(names) == 1:
        result = bench(bundle, names[0], options, inventory, None if as_json else _step, db=db)
        regressions = _regressions(gate, [result], db)
        if as_json:
            typer.echo(json.dumps(_with_gate(result.to_dict(), regressions.get(result.run_id)), indent=2))
        else:
            render_bench(result)
        _finish([result], [], gate, regressions, as_json)
        return
    from edgepack.cli.fleet import bench_on_fleet, fleet_json, render_fleet_summary

    fleet = bench_on_fleet(bundle, names, options, inventory, db, max_connections, quiet=as_json)
    results = [r.result for r in fleet if r.result is not None]
    regressions = _regressions(gate, results, db)
    if as_json:
        out = fleet_json(fleet)
        for item, run in zip(out, fleet):
            if run.result is not None:
                _with_gate(item, regressions.get(run.result.run_id))
        typer.echo(json.dumps(out, indent=2))
    else:
        render_fleet_summary(fleet, f"{Path(bundle).name} on {len(names)} devices")
    _finish(results, [r for r in fleet if r.error is not None], gate, regressions, as_json)


def _bench_micro(bundle: Path, as_json: bool) -> None:
    """A microcontroller bundle: its static figures, marked as not measured on the device."""
    from edgepack.micro.fit import micro_summary
    from edgepack.micro.report import render_micro_summary

    summary = micro_summary(bundle)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        console.print(render_micro_summary(summary))
    if not summary["fits"]:
        raise GateFailed(f"{summary['target']}: the model does not fit the device", hint="the table above says where it is short")


def deploy_command(
    model: Path = typer.Argument(..., help="Keras .keras/.h5 file or SavedModel directory."),
    targets: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Target profile; repeat to compare targets [default: each device's target]."),
    devices: Optional[List[str]] = DEVICES,
    data: Optional[Path] = typer.Option(None, "--data", help="Calibration/evaluation data: .npz (x, y), .npy or an image folder."),
    runs: Optional[int] = RUNS,
    warmup: Optional[int] = WARMUP,
    threads: Optional[int] = THREADS,
    min_seconds: Optional[float] = MIN_SECONDS,
    cold_loads: Optional[int] = COLD_LOADS,
    inventory: Optional[Path] = INVENTORY,
    max_connections: int = MAX_CONNECTIONS,
    db: Optional[Path] = DB,
    baseline: Optional[str] = BASELINE,
    max_regression: Optional[str] = MAX_REGRESSION,
    as_json: bool = AS_JSON,
) -> None:
    """Build MODEL for each target (using the build cache) and measure it on a device, or on several at once."""
    from edgepack.bench import bench
    from edgepack.build.pipeline import build
    from edgepack.cli.build import _show_stage, build_summary, render_build
    from edgepack.device.inventory import load_inventory
    from edgepack.errors import EdgepackError

    store = load_inventory(inventory)
    names = store.resolve(devices or ["local"])
    if targets:
        plan = [(target, names) for target in targets]
    else:  # each device's own target; devices that share one share its build
        plan_by_target: dict[str, list[str]] = {}
        for name in names:
            default = store.get(name).target
            if not default:
                raise EdgepackError(
                    f"no target given and device '{name}' has none",
                    hint=f"pass --target NAME, or set one: edgepack devices add {name} ... --target NAME",
                )
            plan_by_target.setdefault(default, []).append(name)
        plan = list(plan_by_target.items())
    gate = _baseline(baseline, max_regression, db)
    options = _options(runs, warmup, threads, min_seconds, cold_loads)
    builds, results, fleets = [], [], []
    for target, on in plan:
        built = build(model, target, data, on_stage=None if as_json else _show_stage)
        builds.append(built)
        if not as_json:
            render_build(built)
        if not built.passed:
            raise GateFailed(
                f"build for {target} missed its budget: " + "; ".join(built.failures),
                hint=f"nothing was measured; the bundle is kept in {built.bundle}/",
            )
        if built.manifest.format == "tflite-micro":  # firmware: its build figures are all there is
            fleets.append(None)
            if not as_json:
                console.print("   [yellow]note:[/] a microcontroller bundle runs inside firmware: its figures above are static, nothing is measured", highlight=False)
            continue
        if len(names) == 1:
            results.append(bench(built.bundle, on[0], options, inventory, None if as_json else _step, db=db))
            fleets.append(None)
            if not as_json:
                render_bench(results[-1])
            continue
        from edgepack.cli.fleet import bench_on_fleet, render_fleet_summary

        fleet = bench_on_fleet(built.bundle, on, options, inventory, db, max_connections, quiet=as_json)
        fleets.append(fleet)
        results.extend(r.result for r in fleet if r.result is not None)
        if not as_json:
            render_fleet_summary(fleet, f"{target} on {len(on)} devices")
    regressions = _regressions(gate, results, db)
    if as_json:
        from edgepack.cli.fleet import fleet_json

        out = []
        for built, fleet in zip(builds, fleets):
            summary = build_summary(built)
            if fleet is None:
                r = next((r for r in results if r.bundle == built.bundle), None)
                out.append({"build": summary, "bench": _with_gate(r.to_dict(), regressions.get(r.run_id)) if r else None})
                continue
            for item, run in zip(fleet_json(fleet), fleet):
                if run.result is not None:
                    _with_gate(item["result"], regressions.get(run.result.run_id))
                out.append({"build": summary, "device": item["device"], "bench": item.get("result"), "error": item.get("error")})
        typer.echo(json.dumps(out, indent=2))
    elif len(results) > 1 and len(names) == 1:
        render_side_by_side(results)
    failed = [run for fleet in fleets if fleet for run in fleet if run.error is not None]
    _finish(results, failed, gate, regressions, as_json)


def _baseline(ref: Optional[str], max_regression: Optional[str], db: Optional[Path]):
    """Resolve --baseline RUN and --max-regression into (baseline run, threshold), or None without a baseline."""
    from edgepack.errors import EdgepackError

    if ref is None:
        if max_regression is not None:
            raise EdgepackError("--max-regression needs --baseline RUN", hint="for example: --baseline last --max-regression 10%")
        return None
    from edgepack.results.compare import parse_threshold
    from edgepack.results.store import open_store

    threshold = parse_threshold(max_regression if max_regression is not None else "10%")
    with open_store(db) as history:
        return history.resolve(ref), threshold


def _regressions(gate, results, db: Optional[Path]) -> dict:
    """Return {run id: gate rows} for every stored result, against the baseline (empty without one)."""
    if gate is None:
        return {}
    from edgepack.results.compare import regressions
    from edgepack.results.store import open_store

    baseline, threshold = gate
    with open_store(db) as history:
        return {r.run_id: regressions(baseline, history.get(r.run_id), threshold) for r in results if r.run_id is not None}


def _with_gate(doc: dict, rows) -> dict:
    if rows is not None:
        doc["regression"] = [
            {"measure": g.measure, "unit": g.unit, "baseline": g.baseline, "current": g.current,
             "change": g.change, "limit": g.limit, "regressed": g.regressed}
            for g in rows
        ]
    return doc


def _finish(results, failed_devices, gate, regressions: dict, as_json: bool) -> None:
    """Show the regression gate, then exit: 2 for a failed device, 1 for a missed budget or regression."""
    from edgepack.errors import DeviceError

    regressed = []
    if gate is not None:
        baseline, _ = gate
        for r in results:
            rows = regressions.get(r.run_id) or []
            if not as_json:
                from edgepack.results.report import gate_table

                console.print(gate_table(rows, baseline.label, f"#{r.run_id} ({r.manifest.target} on {r.device})"))
            regressed += [(r, g) for g in rows if g.regressed]
    if failed_devices:
        raise DeviceError(
            f"{len(failed_devices)} of {len(failed_devices) + len(results)} devices could not be measured: "
            + "; ".join(f"{run.device}: {run.error.message}" for run in failed_devices),
            hint="the other devices' results are in the summary above and in the history (`edgepack report`)",
        )
    problems = [f"{r.manifest.target} on {r.device}: {f}" for r in results for f in r.budget_failures]
    problems += [
        f"{r.manifest.target} on {r.device}: {g.measure} {100 * g.change:+.1f}% over baseline {gate[0].label} (limit +{100 * g.limit:g}%)"
        for r, g in regressed
    ]
    if problems:
        raise GateFailed("; ".join(problems), hint="the figures are in the table above")


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
        console.print(f"   [yellow]note:[/] {plain(note)}", highlight=False)
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
        growth = f" (+{mem.delta_mb:.1f} over runtime)" if mem.delta_mb is not None else ""
        table.add_row("peak memory", f"{fmt_num(mem.peak_rss_mb, 1)} MB{growth}", budget(mem.peak_rss_mb, budgets.get("max_peak_memory_mb")))
    if r.check:
        agree = f"top-1 {100 * r.check.top1_agreement:.1f}%, " if r.check.top1_agreement is not None else ""
        error = f"max |err| {r.check.max_abs_error:.3g}" if r.check.max_abs_error is not None else "no reference outputs"
        table.add_row("answers vs host", f"{agree}{error} ({r.check.n_samples} samples)", "")
    p = result.push
    table.add_row("push", f"{p.files_sent} files, {p.bytes_sent / 1024:.1f} KB sent, {p.files_skipped} already there", "")
    console.print(table)
    if result.report_path:
        console.print(f"   report: {plain(shown_path(result.report_path))}", highlight=False)


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
        "peak MB": lambda r: fmt_num(r.report.memory.peak_rss_mb, 1),
        "top-1 vs host": lambda r: fmt_num(100 * r.report.check.top1_agreement, 1) + " %" if r.report.check and r.report.check.top1_agreement is not None else "-",
    }
    for name, value in rows.items():
        table.add_row(name, *[value(r) for r in results])
    console.print(table)
