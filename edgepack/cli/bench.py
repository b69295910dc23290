"""`edgepack bench`: measure a bundle on a device, or on several at once; what bench and deploy show.

`edgepack deploy` (`edgepack.cli.deploy`) shows its results with `Progress` and `render_deployment` from here.

Exit codes: 2 when a device could not be measured (unreachable, agent failed; in a fleet run
the others are still measured, stored and summarised first), else 1 when a budget or the
regression gate (`--baseline RUN --max-regression 10%`) failed, else 0. A failed device wins
over a failed gate because the results are then incomplete: the gate has not seen everything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgepack.cli.options import (
    BASELINE,
    MAX_CONNECTIONS,
    MAX_REGRESSION,
    ColdLoads,
    Db,
    Devices,
    Inventory,
    Json,
    MinSeconds,
    Runs,
    Threads,
    Timeout,
    Warmup,
)
from edgepack.cli.render import LiveStatus, console, err_console, fmt_num, plain, shown_path
from edgepack.errors import GateFailed


def bench_options(runs, warmup, threads, min_seconds, cold_loads, timeout, allow_failed=False, sustained=None, sustained_interval=None):
    """Return the BenchOptions the command line asks for (None: the profile's setting)."""
    from edgepack.benchmark import BenchOptions
    from edgepack.cli.bench_inside import parse_duration

    return BenchOptions(
        runs=runs, warmup=warmup, threads=threads, min_seconds=min_seconds, cold_loads=cold_loads, timeout_s=timeout, allow_failed=allow_failed,
        sustained_s=parse_duration(sustained), sustained_interval_s=parse_duration(sustained_interval, "--sustained-interval"),
    )


def bench_command(
    bundle: Path = typer.Argument(..., help="A bundle directory written by `edgepack build`."),
    devices: Devices = None,
    runs: Runs = None,
    warmup: Warmup = None,
    threads: Threads = None,
    min_seconds: MinSeconds = None,
    cold_loads: ColdLoads = None,
    timeout: Timeout = None,
    inventory: Inventory = None,
    max_connections: int = MAX_CONNECTIONS,
    db: Db = None,
    baseline: Optional[str] = BASELINE,
    max_regression: Optional[str] = MAX_REGRESSION,
    allow_failed: bool = typer.Option(False, "--allow-failed", help="Measure a bundle whose build missed its gate; the run is stored as failed."),
    sustained: Optional[str] = typer.Option(
        None, "--sustained", metavar="DURATION",
        help="Also run continuously this long (10m, 90s): p50/p90 per interval beside CPU temperature, frequency and throttling.",
    ),
    sustained_interval: Optional[str] = typer.Option(None, "--sustained-interval", metavar="DURATION", help="With --sustained: the interval [default: a tenth]."),
    as_json: Json = False,
) -> None:
    """Measure a bundle on a device (or several at once): load time, latency, memory, and a check of its answers."""
    from edgepack.bundle import read_manifest
    from edgepack.deployment import measure

    if read_manifest(bundle).format.value == "tflite-micro" and not devices:
        _bench_micro(bundle, as_json)
        return
    options = bench_options(runs, warmup, threads, min_seconds, cold_loads, timeout, allow_failed, sustained, sustained_interval)
    progress = Progress(as_json, Path(bundle).resolve().name, max_connections, measuring_line(read_manifest(bundle), options))
    try:
        deployment = measure(
            bundle, devices, options, inventory, db, baseline, max_regression,
            max_connections, on_step=progress.step, on_change=progress.change,
        )
    finally:
        progress.close()
    render_deployment(deployment, as_json)


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


def measuring_line(manifest, options) -> str:
    """What the device is asked to do, from the profile's bench settings and the overrides: shown while it measures."""
    from edgepack.benchmark import agent_timeout, requested

    runs, warmup, least, cold = (requested(manifest, options, name) for name in ("runs", "warmup", "min_seconds", "cold_loads"))
    return (
        f"{cold} cold load(s), {warmup} warm-up, {runs} timed runs (at least {least:g} s of them), "
        f"then the answers checked (limit {agent_timeout(manifest, options):g} s)"
    )


class Progress:
    """What the terminal shows while a bench or deploy runs: build summaries, steps, each fleet as it goes."""

    def __init__(self, quiet: bool, name: str = "", max_connections: int = 8, measuring: str = ""):
        self.quiet, self.name, self.max_connections = quiet, name, max_connections
        self.measuring = measuring  # what the device is asked to do, shown while it measures
        self._fleet = None
        self._status = None  # on a terminal: the step running now, with its elapsed time

    def part(self, part) -> None:
        """A deploy's part was built (show the build) or measured (show its devices)."""
        from edgepack.cli.build import render_build

        self.name = part.bundle.name
        if self.quiet:
            return
        if not part.runs:
            self.close()
            render_build(part.build)
            if part.skipped and part.build.passed:
                console.print(f"   [yellow]note:[/] {plain(part.skipped)}", highlight=False)
            return
        self.close()
        render_runs(part, f"{part.target} on {len(part.runs)} devices")

    def step(self, message: str) -> None:
        """A single device's bench moved on (connecting, pushing, measuring). On a terminal the step
        stays on one line with its elapsed time, the device's work while it measures; else one line each."""
        if self.quiet:
            return
        if self._status is None:
            self._status = LiveStatus(err_console)
        if not self._status.active:
            err_console.print(f"[dim]… {plain(message)}[/]", highlight=False)
            return
        measuring = message.startswith("measuring")
        self._status.start("bench", message + (f": {self.measuring}" if measuring and self.measuring else ""))

    def change(self, runs) -> None:
        if self.quiet:
            return
        if self._fleet is None:
            from edgepack.cli.fleet_view import FleetProgress

            if self._status is not None:
                self._status.close()
                self._status = None
            self._fleet = FleetProgress(self.name, len(runs), self.max_connections)
        self._fleet.update(runs)

    def close(self) -> None:
        if self._status is not None:
            self._status.close()
            self._status = None
        if self._fleet is not None:
            self._fleet.close()
            self._fleet = None


def render_runs(part, title: str) -> None:
    """Show one bundle's devices: the full table for one device, the fleet summary for several."""
    from edgepack.cli.fleet_view import render_fleet_summary

    if len(part.runs) == 1 and part.runs[0].result is not None:
        render_bench(part.runs[0].result)
    else:
        render_fleet_summary(part.runs, title)


def render_deployment(deployment, as_json: bool) -> None:
    """Print what a bench or deploy did (JSON, or the side-by-side table and the gate), then exit as its failures say."""
    if as_json:
        typer.echo(json.dumps(deployment_json(deployment), indent=2))
    else:
        if all(part.build is None for part in deployment.parts):  # bench: nothing shown yet
            for part in deployment.parts:
                render_runs(part, f"{part.bundle.name} on {len(part.runs)} devices")
        results = deployment.results
        if len(results) > 1 and all(len(part.runs) <= 1 for part in deployment.parts):
            render_side_by_side(results)
        if deployment.gate is not None:
            from edgepack.results.report import gate_table

            for check in deployment.gate.checks:
                this = f"{check.run.label} ({check.run.target} on {check.run.device})"
                if check.baseline is None:
                    console.print(f"[yellow]regression gate:[/] {plain(this)}: {plain(check.note)}", highlight=False)
                    continue
                console.print(gate_table(check.rows, check.baseline.label, this))
                if check.note:
                    console.print(f"[yellow]note:[/] {plain(check.note)}", highlight=False)
    deployment.raise_for_failures()


def deployment_json(deployment):
    """Return a bench (one bundle) or a deploy (a build per target) as the JSON the CLI prints."""
    from edgepack.cli.build import build_summary
    from edgepack.cli.fleet_view import fleet_json

    gate = deployment.gate

    def with_gate(doc: dict, run_id) -> dict:
        rows = gate.rows_for(run_id) if gate else None
        check = next((c for c in gate.checks if c.run.id == run_id), None) if gate else None
        if check is not None:
            doc["baseline"] = check.baseline.id if check.baseline is not None else None
            if check.note:
                doc["baseline_note"] = check.note
        if rows is not None:
            doc["regression"] = [
                {"measure": g.measure, "unit": g.unit, "baseline": g.baseline, "current": g.current,
                 "change": g.change, "limit": g.limit, "regressed": g.regressed}
                for g in rows
            ]
        return doc

    if all(part.build is None for part in deployment.parts):  # bench: one bundle
        runs = deployment.parts[0].runs
        if len(runs) == 1:
            return with_gate(runs[0].result.to_dict(), runs[0].result.run_id)
        out = fleet_json(runs)
        for item, run in zip(out, runs):
            if run.result is not None:
                with_gate(item["result"], run.result.run_id)
        return out
    out = []
    for part in deployment.parts:
        summary = build_summary(part.build)
        if not part.runs or (len(part.runs) == 1 and part.runs[0].result is not None):
            r = part.results[0] if part.results else None
            out.append({"build": summary, "bench": with_gate(r.to_dict(), r.run_id) if r else None})
            continue
        for item, run in zip(fleet_json(part.runs), part.runs):
            if run.result is not None:
                with_gate(item["result"], run.result.run_id)
            out.append({"build": summary, "device": item["device"], "bench": item.get("result"), "error": item.get("error")})
    return out


def _median(values) -> float | None:
    import numpy as np

    return float(np.median(values)) if values else None


def render_bench(result) -> None:
    """Print one bench result: what ran where, then the figures with their budgets."""
    from rich.table import Table

    from edgepack.cli.bench_inside import inside_rows, render_inside

    r, m = result.report, result.manifest
    budgets = m.profile.budgets
    s, rt = r.system, r.runtime
    console.print(f"[bold]{plain(result.bundle.name)}[/] on [bold]{plain(result.device)}[/] ({m.format.value} {m.precision.value})", highlight=False)
    if rt:
        extras = ", ".join(rt.delegates or rt.providers or []) or "no delegate"
        console.print(f"   runtime: {plain(rt.name)} {plain(rt.version)} ({plain(extras)})", highlight=False)
    if s:
        console.print(f"   system: {plain(s.arch)}, {plain(s.cpu_model or 'cpu')}, {s.cores} cores, {fmt_num(s.memory_total_mb, 0)} MB, {plain(s.os)}, Python {plain(s.python)}", highlight=False)
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
        cold, warm = _median(load.cold_ms), _median(load.warm_ms)
        cold_note = "" if load.cold_evicted else " (cache not evicted)"
        if cold is not None and warm is not None and cold < warm:  # an evicted file cannot load faster: the spread of a few loads
            cold_note += " [yellow]below the warm load: noise, not a faster start[/]"
        table.add_row(f"load, cold: fresh process, file evicted (median of {len(load.cold_ms)})", f"{fmt_num(cold)} ms{cold_note}", "")
        table.add_row(f"load, warm: fresh process, file cached (median of {len(load.warm_ms)})", f"{fmt_num(warm)} ms", "")
        _load_rows(table, load, r.memory)
    table.add_row("first inference", f"{fmt_num(r.first_inference_ms)} ms", "")
    lat = r.latency_ms
    if lat:
        table.add_row("latency p50", f"{lat.p50:.3f} ms", "")
        table.add_row("latency p90", f"{lat.p90:.3f} ms", budget(lat.p90, budgets.max_p90_latency_ms))
        table.add_row("latency p99", f"{lat.p99:.3f} ms", "")
        table.add_row("latency mean ± std", f"{lat.mean:.3f} ± {lat.std:.3f} ms ({len(lat.samples)} runs)", "")
    table.add_row("throughput", f"{fmt_num(r.throughput_per_s, 1)} /s", "")
    mem = r.memory
    if mem:
        growth = f" (+{mem.delta_mb:.1f} over runtime)" if mem.delta_mb is not None else ""
        if mem.delta_mb is not None and getattr(mem, "load_mb", None) is not None and getattr(mem, "inference_mb", None) is not None:
            growth = f" (+{mem.delta_mb:.1f} over runtime: load +{mem.load_mb:.1f}, inference +{mem.inference_mb:.1f})"
        table.add_row("peak memory", f"{fmt_num(mem.peak_rss_mb, 1)} MB{growth}", budget(mem.peak_rss_mb, budgets.max_peak_memory_mb))
    if r.check:
        agree = f"top-1 {100 * r.check.top1_agreement:.1f}%, " if r.check.top1_agreement is not None else ""
        error = f"max |err| {r.check.max_abs_error:.3g}" if r.check.max_abs_error is not None else "no reference outputs"
        table.add_row("answers vs host", f"{agree}{error} ({r.check.n_samples} samples)", "")
    inside_rows(table, r, budgets)
    p = result.push
    table.add_row("push", f"{p.files_sent} files, {p.bytes_sent / 1024:.1f} KB sent, {p.files_skipped} already there", "")
    console.print(table)
    render_inside(result)
    if result.report_path:
        console.print(f"   report: {plain(shown_path(result.report_path))}", highlight=False)


def _phase_rows(table, title: str, phases: dict) -> None:
    """A row with the phases' sum, then one row per phase (read file, allocate tensors, ...)."""
    table.add_row(title, f"{sum(phases.values()):.2f} ms", "")
    for name, ms in phases.items():
        table.add_row(f"  {plain(name.replace('_', ' '))}", f"{ms:.2f} ms", "")


def _load_rows(table, load, memory) -> None:
    """The load's detail: its phases and memory, the load-optimised form beside it, and time to first answer."""
    phases = getattr(load, "phases_ms", None)
    if phases:
        _phase_rows(table, "warm load by phase (median of each, summed; timed apart from the loads above)", phases)
    if getattr(load, "import_ms", None) is not None:
        table.add_row("runtime import (warm, median)", f"{fmt_num(load.import_ms)} ms", "")
    if memory is not None and getattr(memory, "load_mb", None) is not None:
        table.add_row("memory the load added", f"+{memory.load_mb:.1f} MB", "")
    opt = getattr(load, "optimized", None)
    if opt is not None:
        plain_warm, warm = _median(load.warm_ms), _median(opt.warm_ms)
        faster = ""
        if plain_warm and warm:
            ratio = plain_warm / warm
            faster = f", {ratio:.1f}x faster than the plain warm load" if ratio >= 1 else f", {1 / ratio:.1f}x slower than the plain warm load"
        table.add_row(f"load, {plain(opt.form)} cold / warm", f"{fmt_num(_median(opt.cold_ms))} / {fmt_num(warm)} ms{faster}", "")
        if opt.import_ms is not None and load.import_ms is not None and opt.import_ms > 2 * load.import_ms + 50:
            table.add_row("  its runtime import", f"{fmt_num(opt.import_ms)} ms", "")
        if opt.check is not None:
            error = f"max |err| {opt.check.max_abs_error:.3g}" if opt.check.max_abs_error is not None else "no reference outputs"
            table.add_row("  its answers vs host", error, "")
        table.add_row("  used by edgepack_runtime.load", "yes" if opt.used_by_loader else "no (see the note)", "")
        if opt.phases_ms:
            _phase_rows(table, f"{plain(opt.form)} phases", opt.phases_ms)
    first = getattr(load, "first_answer", None)
    if first is not None:
        for run in first.runs:
            how = f"{run.form}, background" if run.background else run.form
            table.add_row(f"first answer ({plain(how)})", f"{fmt_num(_median(run.ms))} ms", "")
        table.caption = (f"first answer: a fresh process, from `import edgepack_runtime` to the first predict's return, with "
                         f"{first.startup_work_ms:g} ms of other start-up work (during a background load)")
        table.caption_justify = "left"


def render_side_by_side(results) -> None:
    """Print several bench results as one table, a column per target."""
    from rich.table import Table

    table = Table(title="side by side", header_style="bold")
    table.add_column("measure")
    for r in results:
        table.add_column(f"{plain(r.manifest.target)}\n{r.manifest.precision.value}", justify="right")
    rows = {
        "model KB": lambda r: f"{r.manifest.artifact_bytes / 1024:.1f}",
        "accuracy": lambda r: fmt_num(100 * r.manifest.fidelity.accuracy_artifact, 2) + " %" if r.manifest.fidelity.accuracy_artifact is not None else "-",
        "load cold ms": lambda r: fmt_num(_median(r.report.load.cold_ms)),
        "load warm ms": lambda r: fmt_num(_median(r.report.load.warm_ms)),
        "load optimised warm ms": lambda r: (
            f"{fmt_num(_median(r.report.load.optimized.warm_ms))} ({plain(r.report.load.optimized.form)})" if r.report.load.optimized else "-"
        ),
        "latency p50 ms": lambda r: f"{r.report.latency_ms.p50:.3f}",
        "latency p90 ms": lambda r: f"{r.report.latency_ms.p90:.3f}",
        "peak MB": lambda r: fmt_num(r.report.memory.peak_rss_mb, 1),
        "top-1 vs host": lambda r: fmt_num(100 * r.report.check.top1_agreement, 1) + " %" if r.report.check and r.report.check.top1_agreement is not None else "-",
    }
    for name, value in rows.items():
        table.add_row(name, *[value(r) for r in results])
    console.print(table)
