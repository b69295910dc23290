"""What the command line shows of a fleet (one bundle on several devices): a live table, then a summary.

The fleet itself is run by `edgepack.device.fleet`; this module only draws it.

On a terminal a rich live table shows each device's state while the fleet is measured; elsewhere
(CI logs, pipes) one line is printed per device as it finishes. Either way the summary lists
every device with its result or its error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgepack.cli.render import console, err_console, fmt_num, plain

if TYPE_CHECKING:
    from rich.table import Table

    from edgepack.benchmark import BenchResult
    from edgepack.device.fleet import DeviceRun

_STATE = {"waiting": "[dim]waiting[/]", "running": "[cyan]running[/]", "done": "[green]done ✓[/]", "failed": "[red]failed ✗[/]"}


def _figures(result: BenchResult) -> tuple[str, str, str]:
    r = result.report
    lat = r.latency_ms
    return (
        f"{lat.p50:.3f}" if lat else "-",
        f"{lat.p90:.3f}" if lat else "-",
        fmt_num(r.memory.peak_rss_mb, 1) if r.memory else "-",
    )


def fleet_table(runs: list[DeviceRun[BenchResult]], title: str = "fleet") -> Table:
    """Return one row per device: its state, what it is doing or its outcome, and its figures."""
    from rich.table import Table

    table = Table(title=plain(title), title_justify="left", header_style="bold")
    table.add_column("device", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("s", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p90 ms", justify="right")
    table.add_column("peak MB", justify="right")
    table.add_column("run", justify="right")
    table.add_column("budgets / error / step", overflow="fold")
    for run in runs:
        seconds = f"{run.seconds:.1f}" if run.seconds is not None else ""
        if run.result is not None:
            p50, p90, peak = _figures(run.result)
            note = "[green]ok[/]" if run.result.passed else "[red]" + plain("; ".join(run.result.budget_failures)) + "[/]"
            table.add_row(plain(run.device), _STATE[run.state], seconds, p50, p90, peak,
                          f"#{run.result.run_id}" if run.result.run_id else "-", note)
        elif run.error is not None:
            table.add_row(plain(run.device), _STATE[run.state], seconds, "-", "-", "-", "-", f"[red]{plain(run.error.message)}[/]")
        else:
            table.add_row(plain(run.device), _STATE[run.state], seconds, "", "", "", "", f"[dim]{plain(run.step)}[/]")
    return table


class FleetProgress:
    """Show a fleet run as it goes: a live table on a terminal, one line per finished device elsewhere."""

    def __init__(self, name: str, devices: int, max_connections: int):
        self.title = f"{name} on {devices} devices"
        self.reported: set[str] = set()
        self.live = None
        if console.is_terminal:
            from rich.live import Live

            self.live = Live(console=console, refresh_per_second=4, transient=True)
            self.live.start()
        else:
            err_console.print(f"[dim]… measuring {plain(name)} on {devices} devices, {min(max_connections, devices)} at a time[/]", highlight=False)

    def update(self, runs: list[DeviceRun[BenchResult]]) -> None:
        if self.live is not None:
            self.live.update(fleet_table(runs, self.title))
            return
        for run in runs:
            if run.state in ("done", "failed") and run.device not in self.reported:
                self.reported.add(run.device)
                if run.result is not None:
                    p50, p90, peak = _figures(run.result)
                    err_console.print(f"[green]✓[/] {plain(run.device)}: p50 {p50} ms, p90 {p90} ms, peak {peak} MB ({run.seconds:.1f} s)", highlight=False)
                else:
                    err_console.print(f"[red]✗[/] {plain(run.device)}: {plain(run.error.message)}", highlight=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def render_fleet_summary(runs: list[DeviceRun[BenchResult]], title: str) -> None:
    """Print every device with its result or its error, then a one-line count."""
    console.print(fleet_table(runs, title))
    failed = [r for r in runs if r.error is not None]
    missed = [r for r in runs if r.result is not None and not r.result.passed]
    console.print(
        f"{len(runs) - len(failed)} of {len(runs)} devices measured"
        + (f", [red]{len(failed)} failed[/]" if failed else "")
        + (f", [red]{len(missed)} missed a budget[/]" if missed else ""),
        highlight=False,
    )


def fleet_json(runs: list[DeviceRun[BenchResult]]) -> list[dict[str, Any]]:
    """Return every device's outcome as JSON: its bench result, or its error and hint."""
    out = []
    for run in runs:
        if run.result is not None:
            out.append({"device": run.device, "ok": True, "seconds": run.seconds, "result": run.result.to_dict()})
        else:
            err = run.error
            out.append({"device": run.device, "ok": False, "seconds": run.seconds,
                        "error": err.message if err else None, "hint": err.hint if err else None})
    return out
