"""Search build settings with the device in the loop: an Optuna study asks, a real build and bench answer.

Each trial builds MODEL with the trial's settings written over the target (settings that make a
build already measured are not built again: the trial takes its figures, `same_as`) and measures
the bundle on the device, stored in the results history like any bench. Objectives are minimised (p90 latency, model size, and peak
memory if asked); budgets are constraints: a trial that misses one is marked and never chosen.
The study lives in durable storage (SQLite in the user data directory), keyed by the model's
hash, the target and the device (or a name given), so running again with more trials goes on
from every finished one; a trial that fails (a build or agent error) is recorded as failed and
the study goes on.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from edgepack.errors import EdgepackError
from edgepack.tuning.outcome import OBJECTIVES, TrialResult, TuneResult, summarise, tuned_path, what_differs
from edgepack.tuning.storage import claim_trial, device_lock, fail_orphans, make_sampler, open_study, storage_path, storage_url

__all__ = ["tune", "TrialResult", "TuneResult", "make_sampler", "open_study", "storage_path", "storage_url", "device_lock"]

SAMPLERS = ("tpe", "nsga2", "random", "grid")
DEFAULT_OBJECTIVES = ("p90", "size")
MAX_TRIALS = 10_000
MAX_WORKERS = 64


def tune(
    model: Path,
    target: str,
    data: Path | None = None,
    device: str = "local",
    trials: int = 20,
    timeout_s: float | None = None,
    sampler: str = "tpe",
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES,
    study_name: str | None = None,
    save_as: str | None = None,
    eval_data: Path | None = None,
    train_data: Path | None = None,
    inventory: Path | None = None,
    db: Path | None = None,
    options=None,
    on_trial: Callable[[TrialResult], None] | None = None,
    workdir: Path | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    on_start: Callable[[int, dict[str, Any]], None] | None = None,
    on_bench: Callable[[int, str], None] | None = None,
) -> TuneResult:
    """Search the build settings of MODEL for TARGET on DEVICE; write the best as a profile.

    Args:
        trials: the study's total number of trials: a study that already has some runs the rest.
        objectives: what to minimise, of ``p90``, ``size``, ``memory``.
        save_as: the tuned profile's name [default: ``<target>-tuned``], written to ./targets/.
        workdir: where trial profiles and bundles go [default: ./build/tune-<study>].
        workers: builds at once (benches on the device are always one at a time).
        ray_address: build on the Ray cluster at this address instead of on this machine.
        on_start, on_trial: called as a trial's build starts, and once it is measured (or failed).
        on_bench: called as (trial number, step) as each step of a trial's bench starts (connecting, pushing, measuring).

    Returns:
        Every trial of the study, the Pareto front, and the chosen trial (fastest p90 among those
        meeting every budget, ties by size), whose profile was written.

    Raises:
        EdgepackError: bad input (trials, sampler, objectives, model, data, target, device), before any trial runs.
    """
    import optuna

    from edgepack.benchmark import BenchOptions
    from edgepack.profile.store import Catalog, is_profile_path
    from edgepack.tuning.space import search_space

    if not 1 <= trials <= MAX_TRIALS:
        raise EdgepackError(f"--trials {trials}: give between 1 and {MAX_TRIALS}", hint="for example --trials 20")
    if not 1 <= workers <= MAX_WORKERS:
        raise EdgepackError(f"--workers {workers}: give between 1 and {MAX_WORKERS}", hint="for example --workers 2")
    if sampler not in SAMPLERS:
        raise EdgepackError(f"unknown sampler '{sampler}'", hint=f"use one of {', '.join(SAMPLERS)}")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        raise EdgepackError(f"unknown objective '{(unknown or [''])[0]}'", hint=f"use some of {', '.join(OBJECTIVES)}")
    from edgepack.model.torch_source import is_factory

    model = Path(model)
    for option, path in (("MODEL", model), ("--data", data), ("--eval-data", eval_data), ("--train-data", train_data)):
        if path is not None and not Path(path).exists() and not (option == "MODEL" and is_factory(path)):
            raise EdgepackError(f"{option} {path}: no such file or directory", hint=f"check the {'model' if option == 'MODEL' else 'data'} path")
    catalog = Catalog()
    profile = catalog.load(target).profile
    if is_profile_path(target):  # a profile file: the tuned profile extends it by its full path
        target = str(Path(target).resolve())
    space = search_space(profile)
    if data is None and "int8" in space["precision"]:
        raise EdgepackError(
            f"the search space of target '{target}' has int8, which needs calibration data",
            hint="pass --data FILE, or narrow it in the profile: tune: {precision: [fp16]}",
        )
    _check_device(device, inventory)
    out_path = tuned_path(save_as or f"{profile.name}-tuned", profile.name)

    from edgepack.model.source import sha256_path

    # What the stored trials depend on: a study is only continued with the same model, device, space,
    # objectives, data and resolved profile (budgets included); anything else is a new study, and a
    # name given with --study that was used for anything else is refused.
    model_sha = sha256_path(model)
    basis = json.dumps({"model": model_sha, "device": device, "space": space, "objectives": list(objectives),
                        "profile": profile.model_dump(mode="json"),
                        "data": [sha256_path(Path(p)) if p else None for p in (data, eval_data, train_data)]}, sort_keys=True)
    name = study_name or f"{model_sha[:12]}-{profile.name}-{device}-{hashlib.sha256(basis.encode()).hexdigest()[:8]}"
    work = (Path(workdir) if workdir else Path("build") / f"tune-{_safe(name)}").resolve()
    from edgepack.tuning.builds import BuildInputs

    runner = _runner(BuildInputs(model, data, eval_data, train_data), work, workers, ray_address)  # Ray joined before anything is written
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = open_study(name, ["minimize"] * len(objectives), make_sampler(sampler, workers))
        if study.user_attrs.get("basis", basis) != basis:
            raise EdgepackError(
                f"study '{name}' was run with {what_differs(study.user_attrs.get('basis'), basis)}",
                hint="drop --study to start a study for these settings, or give a new name",
            )
        study.set_user_attr("basis", basis)
        fail_orphans(study)  # trials a killed run left "running": failed, never counted
        (work / "targets").mkdir(parents=True, exist_ok=True)
        search = _Search(study=study, space=space, objectives=list(objectives), profile=profile, device=device, inventory=inventory,
                         db=db, options=options or BenchOptions(), work=work, on_trial=on_trial, on_start=on_start,
                         on_bench=on_bench)
        search.run(trials, timeout_s, grid=sampler == "grid", runner=runner)
    except BaseException:
        runner.close(wait=False)  # Ctrl-C or an error: builds still running are not waited for
        raise
    runner.close()
    return summarise(study, name, target, device, list(objectives), out_path, work)


def _runner(inputs, work: Path, workers: int, ray_address: str | None):
    from edgepack.tuning.builds import InlineBuilds, PoolBuilds, RayBuilds

    if ray_address:
        return RayBuilds(inputs, ray_address, workers)
    if workers > 1:
        return PoolBuilds(inputs, work / "targets", workers)
    return InlineBuilds(inputs, work / "targets")


@dataclass
class _Search:
    """The ask / build / bench / tell loop: up to `runner.workers` builds at once, one bench at a time."""

    study: Any
    space: dict[str, list[Any]]
    objectives: list[str]
    profile: Any
    device: str
    inventory: Optional[Path]
    db: Optional[Path]
    options: Any
    work: Path
    on_trial: Optional[Callable[[TrialResult], None]]
    on_start: Optional[Callable[[int, dict[str, Any]], None]]
    on_bench: Optional[Callable[[int, str], None]] = None
    asked: dict[int, Any] = field(default_factory=dict, init=False)  # asked, not yet told: failed (not a result) if the run stops

    def run(self, trials: int, timeout_s: float | None, grid: bool, runner) -> None:
        import concurrent.futures as cf
        import time

        import optuna

        from edgepack.tuning.builds import BuildJob, trial_profiles
        from edgepack.tuning.space import trial_settings

        finished = [t for t in self.study.trials if "result" in t.user_attrs]
        left = max(0, trials - len(finished))
        points = _grid_left(self.space, finished) if grid else None
        deadline = time.monotonic() + timeout_s if timeout_s else None
        pending: dict[cf.Future, tuple[Any, dict[str, Any]]] = {}
        waiting: list[tuple[Any, dict[str, Any]]] = []  # the same build as one still building: told once it is
        try:
            while True:
                while left and len(pending) < runner.workers and not (deadline and time.monotonic() > deadline):
                    if points is not None:
                        if not points:
                            left = 0  # every point of the grid is measured
                            break
                        self.study.enqueue_trial(points.pop(0))
                    trial, left = self.study.ask(), left - 1
                    claim_trial(trial)
                    self.asked[trial.number] = trial
                    params = {key: trial.suggest_categorical(key, values) for key, values in self.space.items()}
                    if self._tell_same_build(trial, params):
                        continue
                    if any(trial_settings(building) == trial_settings(params) for _, building in pending.values()):
                        waiting.append((trial, params))
                        continue
                    if self.on_start:
                        self.on_start(trial.number, params)
                    name = f"{self.profile.name}-trial-{trial.number}"
                    job = BuildJob(trial.number, name, trial_profiles(self.profile, name, trial_settings(params)), self.work / f"trial-{trial.number}")
                    try:
                        pending[runner.submit(job)] = (trial, params)
                    except Exception as exc:  # the build could not start (a broken pool, a lost cluster): this trial fails
                        self._tell(trial, TrialResult(trial.number, params, "failed", failures=[f"the build could not start: {_first_line(exc)}"]))
                if not pending:
                    return
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    trial, params = pending[future]
                    self._tell(trial, self._measure(trial.number, params, future))
                    del pending[future]
                    for same in [w for w in waiting if trial_settings(w[1]) == trial_settings(params)]:
                        waiting.remove(same)
                        if not self._tell_same_build(*same):  # the build it waited for failed: so does it
                            self._tell(same[0], TrialResult(same[0].number, same[1], "failed", same_as=trial.number,
                                                            failures=[f"the same build as trial {trial.number}, which failed"]))
        finally:
            for trial in self.asked.values():  # stopped before it was measured: not a result, never counted
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)

    def _tell_same_build(self, trial, params: dict[str, Any]) -> bool:
        """Tell TRIAL the figures of a finished trial whose settings make the same build, if there is one."""
        same = _same_build(self.study, params)
        if same is None:
            return False
        original = same["same_as"] if same.get("same_as") is not None else same["number"]
        self._tell(trial, TrialResult(**{**same, "number": trial.number, "params": params, "same_as": original}))
        return True

    def _measure(self, number: int, params: dict[str, Any], future) -> TrialResult:
        """Bench the bundle FUTURE built (unless its build failed or missed the gate)."""
        from edgepack.benchmark import bench

        result = TrialResult(number, params, "failed")
        try:
            outcome = future.result()
        except Exception as exc:  # the build's process or task died (out of memory, a lost Ray node)
            result.failures = [f"the build failed: {_first_line(exc)}"]
            return result
        result.failures, result.built = list(outcome.failures), dict(outcome.built)
        if outcome.error:
            return result
        result.bundle = outcome.bundle
        result.values.update(outcome.values)
        if not outcome.passed:
            return _unmeasured(result)
        try:
            with device_lock(self.device):  # never two benches on one device, whichever process runs them
                same = _same_build(self.study, params)  # another tune of this study measured it meanwhile: its figures
                if same is not None:
                    original = same["same_as"] if same.get("same_as") is not None else same["number"]
                    return TrialResult(**{**same, "number": number, "params": params, "same_as": original})
                step = (lambda message: self.on_bench(number, message)) if self.on_bench else None
                measured = bench(Path(outcome.bundle), self.device, self.options, self.inventory, step, db=self.db,
                                 trial={"study": self.study.study_name, "number": number})
        except EdgepackError as exc:
            result.failures = [exc.message]
            return result
        except Exception as exc:  # a bug or a library's error in one trial: recorded, and the study goes on
            result.failures = [_first_line(exc)]
            return result
        r = measured.report
        result.state = "complete"
        result.values.update(p90_ms=r.latency_ms.p90 if r.latency_ms else None, peak_mb=r.memory.peak_rss_mb if r.memory else None)
        result.failures = list(measured.budget_failures)
        result.meets_budgets = not result.failures
        return result

    def _tell(self, trial, result: TrialResult) -> None:
        import optuna

        values = [result.values.get(OBJECTIVES[o]) for o in self.objectives]
        if result.state == "complete" and any(v is None for v in values):
            if result.meets_budgets:  # measured, and yet a figure is missing: nothing to compare it by
                result.state, result.meets_budgets = "failed", False
                result.failures.append("the device report has no " + ", ".join(o for o, v in zip(self.objectives, values) if v is None))
            else:  # not measured (its build missed the gate): the worst there is, never preferred
                values = [math.inf if v is None else v for v in values]
        trial.set_user_attr("result", result.to_dict())
        trial.set_constraint("budgets", 0.0 if result.meets_budgets else 1.0)  # > 0: infeasible, never preferred
        if result.state == "complete":
            self.study.tell(trial, values)
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.asked.pop(trial.number, None)
        if self.on_trial:
            self.on_trial(result)


def _unmeasured(result: TrialResult) -> TrialResult:
    """A build that missed its gate is not measured: its objectives are the worst there are, so it is never preferred."""
    result.values.update(p90_ms=float("inf"), peak_mb=float("inf"))
    result.state = "complete"
    return result


def _same_build(study, params: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The stored result of a finished trial whose settings make the same build as PARAMS, if any."""
    from edgepack.tuning.space import trial_settings

    wanted = trial_settings(params)
    for t in study.trials:
        result = t.user_attrs.get("result")
        if result and result["state"] == "complete" and trial_settings(result["params"]) == wanted:
            return result
    return None


def _grid_left(space: dict[str, list[Any]], finished) -> list[dict[str, Any]]:
    """The points of the full grid over SPACE that no FINISHED trial has measured, in order."""
    import itertools

    done = [t.params for t in finished]
    points = [dict(zip(space, values)) for values in itertools.product(*space.values())]
    return [p for p in points if p not in done]


def _check_device(device: str, inventory: Path | None) -> None:
    """Refuse an unknown or unreachable device before any trial runs."""
    from edgepack.device.connect import open_transport

    with open_transport(device, inventory=inventory):
        pass


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def _safe(name: str) -> str:
    clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return clean if clean == name else f"{clean[:40]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
