"""Measure a bundle on a device: push it with the agent, run the agent, parse its report.

Used by `edgepack bench` and `edgepack deploy` (through `edgepack.deployment`). The bundle lands in `<workdir>/<bundle id>/` on
the device and stays there as a cache: a second bench of the same bundle sends nothing. Every
successful measurement is stored in the results history (`edgepack.results.store`);
`bench_fleet` measures one bundle on several devices at once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from edgepack.agent.assemble import agent_file, loader_file
from edgepack.agent.protocol import AgentReport, parse_report
from edgepack.atomic import cannot_write, write_atomic
from edgepack.bundle import LOADER, MANIFEST, Manifest, bundle_id, bundle_sha256, check_files, read_manifest
from edgepack.device.connect import open_transport
from edgepack.device.transport import PushResult, TimedOut
from edgepack.errors import DeviceError, EdgepackError
from edgepack.limits import agent_timeout_s
from edgepack.profile.schema import Engine, Format

if TYPE_CHECKING:
    from edgepack.device.fleet import DeviceRun

OnStep = Callable[[str], None]


@dataclass
class BenchOptions:
    """Overrides of the profile's bench settings (None: take the profile's)."""

    runs: Optional[int] = None
    warmup: Optional[int] = None
    min_seconds: Optional[float] = None
    cold_loads: Optional[int] = None
    threads: Optional[int] = None
    timeout_s: Optional[float] = None  # None: derived from the requested work (edgepack.limits.agent_timeout_s)
    allow_failed: bool = False  # measure a bundle whose build missed its gate (the run is stored as failed)
    sustained_s: Optional[float] = None  # bench --sustained: run continuously this long, per-interval figures
    sustained_interval_s: Optional[float] = None  # None: a tenth of sustained_s, at least 1 s


@dataclass
class BenchResult:
    device: str
    bundle: Path
    manifest: Manifest
    report: AgentReport
    push: PushResult
    seconds: dict[str, float] = field(default_factory=dict)  # connect, push, run, total
    budget_failures: list[str] = field(default_factory=list)
    report_path: Optional[Path] = None
    run_id: Optional[int] = None  # its id in the results history, once stored
    write_error: Optional[EdgepackError] = None  # the JSON report beside the bundle could not be written
    trial: Optional[dict] = None  # {"study", "number"}: the `edgepack tune` trial this bench measured
    advice: list[str] = field(default_factory=list)  # from measurement: e.g. another precision ran faster here

    @property
    def passed(self) -> bool:
        return not self.budget_failures

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "device": self.device,
            "bundle": str(self.bundle),
            "target": self.manifest.target,
            "format": self.manifest.format.value,
            "precision": self.manifest.precision.value,
            "passed": self.passed,
            "budget_failures": self.budget_failures,
            "advice": self.advice,
            "push": self.push.__dict__,
            "seconds": self.seconds,
            "report": self.report.model_dump(mode="json"),
        }


def agent_argv(python: str, agent: str, bundle: str, manifest: Manifest, options: BenchOptions) -> list[str]:
    """Build the agent's command line from the profile's bench/runtime settings and the overrides."""
    runtime = manifest.profile.runtime

    argv = [python, agent, bundle, "--exit-with-stdin"]  # a killed bench leaves no agent running
    for name in BENCH_SETTINGS:
        argv += [f"--{name.replace('_', '-')}", str(requested(manifest, options, name))]
    threads = options.threads if options.threads is not None else runtime.threads
    if threads is not None:
        argv += ["--threads", str(threads)]
    if runtime.delegates:
        argv += ["--delegates", ",".join(runtime.delegates)]
    if runtime.providers:
        argv += ["--providers", ",".join(runtime.providers)]
    argv += ["--load-cache", runtime.load_cache.value]
    if options.sustained_s:
        argv += ["--sustained", f"{options.sustained_s:g}", "--sustained-interval", f"{sustained_interval(options):g}"]
    return argv


def sustained_interval(options: BenchOptions) -> float:
    """The interval of a sustained bench: as asked, else a tenth of its length (at least 1 s)."""
    return options.sustained_interval_s or max(1.0, (options.sustained_s or 0) / 10.0)


BENCH_SETTINGS = ("runs", "warmup", "min_seconds", "cold_loads")  # in agent_timeout_s's order
PROFILE_S = 120.0  # the per-operator profile: a fresh session and its runs, or TFLite's benchmark_model


def requested(manifest: Manifest, options: BenchOptions, name: str):
    """A bench setting (runs, warmup, min_seconds, cold_loads): the override where given, else the profile's."""
    value = getattr(options, name)
    return value if value is not None else getattr(manifest.profile.bench, name)


def agent_timeout(manifest: Manifest, options: BenchOptions) -> float:
    """Seconds the agent may run: `options.timeout_s`, else derived from the work this bench asks for.

    Raises:
        EdgepackError: a --timeout that leaves no time after the --sustained run it also asks for.
    """
    sustained = options.sustained_s or 0
    if options.timeout_s is not None:
        if sustained and options.timeout_s <= sustained:
            raise EdgepackError(
                f"--timeout {options.timeout_s:g} s ends the agent before the {sustained:g} s --sustained run is over",
                hint=f"raise --timeout well above {sustained:g} s (loads and the timed runs come first), or drop it",
            )
        return options.timeout_s
    tensorrt = manifest.profile.runtime.engine is Engine.tensorrt
    # The per-operator profile is a session of its own after the timed runs.
    return agent_timeout_s(*(requested(manifest, options, name) for name in BENCH_SETTINGS), tensorrt) + PROFILE_S + 1.2 * sustained


def check_budgets(report: AgentReport, manifest: Manifest) -> list[str]:
    """Return the budgets the measurement missed (p90 latency, peak memory)."""
    budgets = manifest.profile.budgets
    failures = []
    p90, limit = report.latency_ms.p90 if report.latency_ms else None, budgets.max_p90_latency_ms
    if p90 is not None and limit is not None and p90 > limit:
        failures.append(f"p90 latency {p90:.2f} ms is over the budget of {limit:g} ms")
    peak, limit = report.memory.peak_rss_mb if report.memory else None, budgets.max_peak_memory_mb
    if peak is not None and limit is not None and peak > limit:
        failures.append(f"peak memory {peak:.1f} MB is over the budget of {limit:g} MB")
    from edgepack.results.device_facts import inside_failures

    return failures + inside_failures(report, manifest)


def measurable(bundle: Path, options: BenchOptions) -> tuple[Manifest, list[str]]:
    """Check that BUNDLE may be measured: a bundle for a device, every file as built, a build that passed its gate.

    Returns:
        The manifest, and the failure to store with the run when a build that missed its gate is
        measured anyway (`options.allow_failed`).

    Raises:
        EdgepackError: not a bundle, a microcontroller bundle, a file changed after the build, or a
            build that missed its gate (without allow_failed).
    """
    manifest = read_manifest(bundle)
    if manifest.format is Format.tflite_micro:
        raise EdgepackError(
            f"{bundle}: a microcontroller bundle runs inside firmware, not on a device edgepack can reach over SSH",
            hint=f"`edgepack bench {bundle}` with no --device prints its static figures (fit, arena, latency estimate)",
        )
    check_files(bundle, manifest)
    if manifest.passed:
        return manifest, []
    missed = "; ".join(manifest.fidelity.failures) or "status failed"
    if not options.allow_failed:
        raise EdgepackError(
            f"{bundle}: its build missed its gate ({missed}): its figures would describe a model that does not pass",
            hint=f"rebuild it, or measure it anyway with `edgepack bench {bundle} --allow-failed` (stored as failed)",
        )
    return manifest, [f"the build missed its gate: {missed}"]


def bench(
    bundle: Path,
    device: str = "local",
    options: BenchOptions | None = None,
    inventory: Path | None = None,
    on_step: OnStep | None = None,
    db: Path | None = None,
    store: bool = True,
    trial: dict | None = None,
) -> BenchResult:
    """Push BUNDLE and the agent to DEVICE, measure it there, and return the parsed report.

    The report is also written beside the bundle as `<bundle>.<device>.bench.json`, and stored in
    the results history (DB, default the user data directory's) unless STORE is false; its run id
    is then ``result.run_id``. TRIAL ({"study", "number"}) marks a bench of an `edgepack tune` trial.

    Raises:
        EdgepackError: not a bundle; DeviceError: the device cannot be reached or the agent fails;
            ResultsError: the history cannot be written (the JSON report is written all the same).
    """
    options = options or BenchOptions()
    step = on_step or (lambda _msg: None)
    bundle = Path(bundle).resolve()  # `bench .` from inside the bundle: its name is needed below
    manifest, gate_failures = measurable(bundle, options)
    files = {f.path: bundle / f.path for f in manifest.files}
    files[MANIFEST] = bundle / MANIFEST
    files["edgepack_agent.py"] = agent_file()  # assembled from edgepack/ondevice/: the same bytes every time
    # A bundle from before the loader has none: the agent measures time to first answer with this one.
    files.setdefault(LOADER, loader_file())

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    with open_transport(device, inventory=inventory, progress=step) as transport:
        seconds["connect"] = time.perf_counter() - start
        remote = bundle_id(bundle)
        step(f"pushing {bundle.name} to {transport.name}")
        t = time.perf_counter()
        push = transport.push(files, remote)
        seconds["push"] = time.perf_counter() - t
        argv = agent_argv(
            transport.python, transport.remote_path(remote, "edgepack_agent.py"), transport.remote_path(remote), manifest, options
        )
        step(f"measuring on {transport.name}")
        t = time.perf_counter()
        timeout = agent_timeout(manifest, options)
        try:
            result = transport.run(argv, timeout=timeout, hold_stdin=True)
        except TimedOut as exc:
            exc.hint = f"the agent was killed after {timeout:g} s; give it longer with --timeout SECONDS, or ask for less (--min-seconds, --cold-loads)"
            raise
        seconds["run"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start

    try:
        report = parse_report(result.stdout)
    except DeviceError as exc:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        exc.details.append(f"agent exit code {result.exit_code}; stderr: {tail or '(empty)'}")
        raise
    if not report.ok:
        raise DeviceError(
            f"the agent on {device} could not measure {bundle.name}: {'; '.join(report.errors)}",
            hint="`edgepack devices check " + device + "` shows which runtimes the device has",
        )
    out = BenchResult(device, bundle, manifest, report, push, seconds, gate_failures + check_budgets(report, manifest), trial=trial)
    out.report_path = bundle.parent / f"{bundle.name}.{device}.bench.json"
    from edgepack.results.device_facts import precision_advice

    out.advice = precision_advice(report, manifest, [])
    try:
        if store:
            from edgepack.results.store import open_store

            with open_store(db) as history:
                out.advice = precision_advice(report, manifest, history.runs(device=device))  # beside the device's earlier runs
                out.run_id = history.add(
                    device=device,
                    manifest=manifest,
                    report=report,
                    bundle_sha=bundle_sha256(bundle),
                    bundle_path=str(bundle),
                    budget_failures=out.budget_failures,
                    seconds=seconds,
                    trial=trial,
                )
    finally:
        try:
            write_atomic(out.report_path, json.dumps(out.to_dict(), indent=2) + "\n")
        except OSError as exc:  # the run is measured and stored: keep it, and say what could not be written
            out.write_error = cannot_write(out.report_path, exc, "the bench report")
            out.report_path = None
    return out


def bench_fleet(
    bundle: Path,
    devices: list[str],
    options: BenchOptions | None = None,
    inventory: Path | None = None,
    db: Path | None = None,
    store: bool = True,
    max_connections: int = 8,
    on_change: Callable[[list[DeviceRun[BenchResult]]], None] | None = None,
) -> list[DeviceRun[BenchResult]]:
    """Measure BUNDLE on every device in DEVICES at once, at most MAX_CONNECTIONS connected at a time.

    A device that cannot be reached or fails to measure does not stop the others: each device's
    `DeviceRun` holds its `BenchResult` (stored in the history as soon as it is in) or its error.

    Args:
        devices: device names (groups already expanded: `edgepack.device.inventory.resolve_devices`).
        on_change: called from the calling thread with every device's state as it changes.

    Returns:
        One `DeviceRun` per device, in the order given.

    Raises:
        EdgepackError: not a bundle (checked once, before any device is contacted).
    """
    from edgepack.device.fleet import run_fleet

    measurable(Path(bundle).resolve(), options or BenchOptions())  # a bad bundle is one error, not one per device
    return run_fleet(
        list(dict.fromkeys(devices)),
        lambda device, step: bench(bundle, device, options, inventory, step, db=db, store=store),
        max_connections=max_connections,
        on_change=on_change,
    )



def __getattr__(name: str):
    """AGENT: the agent pushed to devices, assembled from edgepack/ondevice/ (once per process)."""
    if name == "AGENT":
        return agent_file()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
