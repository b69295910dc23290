"""Targets x devices: build each target (through the build cache), measure each bundle on its devices, gate.

`deploy` is what `edgepack deploy` runs, and `measure` what `edgepack bench` runs: both return a
`Deployment` that holds every build, every device's result or error, and the regression gate,
and say what failed in one place (`Deployment.failures`), so the API and the CLI agree on it.
A microcontroller bundle runs inside firmware: its figures are the build's static ones and
nothing is measured. A build that misses its gate is not measured either, and the other targets
still are. A device that cannot be measured does not stop the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from edgepack.errors import DeviceError, EdgepackError, GateFailed
from edgepack.profile.schema import Format

if TYPE_CHECKING:
    from edgepack.benchmark import BenchOptions, BenchResult
    from edgepack.builder.pipeline import BuildResult, OnStage
    from edgepack.device.fleet import DeviceRun
    from edgepack.results.gate import Baseline, GateReport

MICRO_NOTE = "a microcontroller bundle runs inside firmware: its figures above are static, nothing is measured"


@dataclass
class Part:
    """One bundle of a deployment: its build (None when it was given as a bundle) and each device's run."""

    target: str
    bundle: Path
    devices: list[str]
    build: Optional[BuildResult] = None
    runs: list[DeviceRun[BenchResult]] = field(default_factory=list)
    skipped: Optional[str] = None  # why nothing was measured

    @property
    def results(self) -> list[BenchResult]:
        return [run.result for run in self.runs if run.result is not None]


@dataclass
class Deployment:
    """Every part of a deployment, and the regression gate over its stored runs (None without a baseline)."""

    parts: list[Part]
    gate: Optional[GateReport] = None

    @property
    def results(self) -> list[BenchResult]:
        return [r for part in self.parts for r in part.results]

    @property
    def failed_devices(self) -> list[DeviceRun[BenchResult]]:
        return [run for part in self.parts for run in part.runs if run.error is not None]

    @property
    def failures(self) -> list[str]:
        """Everything that failed, one line each: builds that missed their gate, devices, budgets, regressions."""
        lines = [f"build for {p.target} missed its budget: " + "; ".join(p.build.failures) for p in self.parts if p.build and not p.build.passed]
        lines += [f"{run.device}: {run.error.message}" for run in self.failed_devices]
        lines += [r.write_error.message for r in self.results if r.write_error is not None]
        lines += [f"{r.manifest.target} on {r.device}: {f}" for r in self.results for f in r.budget_failures]
        lines += self.gate.failures if self.gate else []
        return lines

    @property
    def passed(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> None:
        """Raise what failed, as the CLI reports it: a failed device first (exit 2), then a build, budget or regression (exit 1).

        A failed device wins because the results are then incomplete: the gate has not seen everything.
        """
        failed = self.failed_devices
        if failed:
            total = sum(len(p.runs) for p in self.parts)
            raise DeviceError(
                f"{len(failed)} of {total} devices could not be measured: " + "; ".join(f"{run.device}: {run.error.message}" for run in failed),
                hint="the other devices' results are in the summary above and in the history (`edgepack report`)",
            )
        unwritten = [r.write_error for r in self.results if r.write_error is not None]
        if unwritten:
            raise unwritten[0]
        if self.failures:
            unbuilt = [p.build.bundle for p in self.parts if p.build and not p.build.passed]
            hint = "the figures are in the table above"
            if unbuilt:
                hint = f"nothing was measured for a build that missed its budget; its bundle is kept in {', '.join(f'{b}/' for b in unbuilt)}"
            raise GateFailed("; ".join(self.failures), hint=hint)


def measure_part(
    part: Part,
    options: BenchOptions | None,
    inventory: Path | None,
    db: Path | None,
    max_connections: int,
    on_step: Callable[[str], None] | None,
    on_change: Callable[[list[DeviceRun[BenchResult]]], None] | None,
    only_device: bool,
) -> None:
    """Measure PART's bundle on its devices; each device's outcome lands in part.runs.

    When the whole run has ONLY_DEVICE, its error is raised as it is (nothing else is left to
    measure); otherwise at most MAX_CONNECTIONS are measured at a time and a failed device is kept
    in its `DeviceRun`, so the others go on.
    """
    from edgepack.benchmark import bench, bench_fleet
    from edgepack.device.fleet import DONE, DeviceRun

    if only_device:
        started = time.monotonic()
        result = bench(part.bundle, part.devices[0], options, inventory, on_step, db=db)
        part.runs = [DeviceRun(part.devices[0], DONE, started=started, finished=time.monotonic(), result=result)]
        return
    part.runs = bench_fleet(part.bundle, part.devices, options, inventory, db=db, max_connections=max_connections, on_change=on_change)


def measure(
    bundle: Path,
    devices: str | list[str] | None = None,
    options: BenchOptions | None = None,
    inventory: Path | None = None,
    db: Path | None = None,
    baseline: str | None = None,
    max_regression: str | None = None,
    max_connections: int = 8,
    on_step: Callable[[str], None] | None = None,
    on_change: Callable[[list[DeviceRun[BenchResult]]], None] | None = None,
) -> Deployment:
    """Measure BUNDLE on DEVICES (names or groups; default the local machine) and gate it against BASELINE.

    Raises:
        EdgepackError: not a bundle, a microcontroller bundle, an unknown device, a malformed
            baseline (all before any device is contacted).
    """
    from edgepack.bundle import read_manifest
    from edgepack.device.inventory import resolve_devices

    manifest = read_manifest(Path(bundle))
    devices = [devices] if isinstance(devices, str) else devices
    names = resolve_devices(devices or ["local"], inventory)
    base = _baseline(baseline, max_regression, db)
    part = Part(manifest.target, Path(bundle), names)
    measure_part(part, options, inventory, db, max_connections, on_step, on_change, only_device=len(names) == 1)
    return Deployment([part], _gate(base, [part], db))


def deploy(
    model: Path,
    targets: str | list[str] | None = None,
    devices: str | list[str] | None = None,
    data: Path | None = None,
    options: BenchOptions | None = None,
    inventory: Path | None = None,
    db: Path | None = None,
    baseline: str | None = None,
    max_regression: str | None = None,
    max_connections: int = 8,
    on_stage: OnStage | None = None,
    on_part: Callable[[Part], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    on_change: Callable[[list[DeviceRun[BenchResult]]], None] | None = None,
) -> Deployment:
    """Build MODEL for each target (through the build cache) and measure each bundle on DEVICES.

    Args:
        targets: target profiles [default: each device's own target; devices that share one share its build].
        devices: device names or groups [default: the local machine].
        baseline, max_regression: gate every new run against this stored run (``last``: the last
            one before this deployment) [default limit: 10%].
        on_part: called with each part once it is built (before it is measured) and again once measured.

    Returns:
        Every build and measurement; ``deployment.passed`` and ``deployment.failures`` say what
        failed, and ``deployment.raise_for_failures()`` raises it as the CLI reports it.

    Raises:
        EdgepackError: bad input (model, data, target, device, baseline), before anything is measured.
    """
    from edgepack.builder.pipeline import build
    from edgepack.device.inventory import load_inventory

    targets = [targets] if isinstance(targets, str) else targets
    devices = [devices] if isinstance(devices, str) else devices
    store = load_inventory(inventory)
    names = store.resolve(devices or ["local"])
    if targets:
        plan = [(target, names) for target in targets]
    else:
        by_target: dict[str, list[str]] = {}
        for name in names:
            default = store.get(name).target
            if not default:
                raise EdgepackError(
                    f"no target given and device '{name}' has none",
                    hint=f"pass --target NAME, or set one: edgepack devices add {name} ... --target NAME",
                )
            by_target.setdefault(default, []).append(name)
        plan = list(by_target.items())
    base = _baseline(baseline, max_regression, db)
    notify = on_part or (lambda _part: None)
    parts = []
    for target, on in plan:
        built = build(model, target, data, on_stage=on_stage)
        part = Part(target, built.bundle, on, build=built)
        parts.append(part)
        if not built.passed:
            part.skipped = "the build missed its gate: nothing worth measuring"
        elif built.manifest.format is Format.tflite_micro:
            part.skipped = MICRO_NOTE
        notify(part)
        if part.skipped is None:
            measure_part(part, options, inventory, db, max_connections, on_step, on_change, only_device=len(names) == 1)
            notify(part)
    return Deployment(parts, _gate(base, parts, db))


def _baseline(ref: str | None, max_regression: str | None, db: Path | None) -> Optional[Baseline]:
    from edgepack.results.gate import resolve_baseline

    if ref is None and max_regression is None:
        return None  # no gate: the results history need not even exist
    return resolve_baseline(ref, max_regression, db)


def _gate(base: Optional[Baseline], parts: list[Part], db: Path | None) -> Optional[GateReport]:
    if base is None:
        return None
    from edgepack.results.gate import gate_runs

    return gate_runs(base, [r.run_id for part in parts for r in part.results if r.run_id is not None], db)
