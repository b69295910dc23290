"""What a tune study found: each trial's result, the Pareto front, the chosen trial, and its profile written out."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from edgepack.errors import EdgepackError

OBJECTIVES = {"p90": "p90_ms", "size": "size_kb", "memory": "peak_mb"}


@dataclass
class TrialResult:
    number: int
    params: dict[str, Any]
    state: str  # complete | failed
    values: dict[str, Optional[float]] = field(default_factory=dict)  # p90_ms, size_kb, peak_mb, accuracy, top1_agreement
    meets_budgets: bool = False
    failures: list[str] = field(default_factory=list)  # budgets missed, or the error that failed the trial
    bundle: Optional[str] = None
    built: dict[str, Any] = field(default_factory=dict)  # what the build became (recovery may climb to another precision)
    same_as: Optional[int] = None  # the earlier trial whose build this one's settings make: its figures, not measured again

    def to_dict(self) -> dict[str, Any]:
        values = {k: (v if v is None or math.isfinite(v) else None) for k, v in self.values.items()}  # unmeasured: null
        return {"number": self.number, "params": self.params, "values": values, "state": self.state,
                "meets_budgets": self.meets_budgets, "failures": self.failures, "bundle": self.bundle, "built": self.built,
                "same_as": self.same_as}


@dataclass
class TuneResult:
    study: str
    target: str
    device: str
    objectives: list[str]
    trials: list[TrialResult]
    pareto: list[int]  # trial numbers on the Pareto front, among those meeting every budget
    chosen: Optional[TrialResult] = None
    profile: Optional[Path] = None  # the tuned profile written for the chosen trial

    def to_dict(self) -> dict[str, Any]:
        chosen = None
        if self.chosen is not None:
            chosen = {"number": self.chosen.number, "profile": str(self.profile) if self.profile else None, "bundle": self.chosen.bundle}
        return {"study": self.study, "trials": [t.to_dict() for t in self.trials], "pareto": self.pareto, "chosen": chosen}


def what_differs(stored: str | None, basis: str) -> str:
    """Say what a study was run with that differs from BASIS: "another model", "another device and data"..."""
    try:
        old, new = json.loads(stored), json.loads(basis)
    except (TypeError, ValueError):
        return "settings this edgepack cannot read"
    words = {"model": "another model", "device": "another device", "space": "another search space", "objectives": "other objectives",
             "profile": "another profile", "data": "other data"}
    return " and ".join([word for key, word in words.items() if old.get(key) != new.get(key)] or ["other settings"])


def summarise(study, name: str, target: str, device: str, objectives: list[str], profile_path: Path, work: Path) -> TuneResult:
    """Read every finished trial of STUDY, find the Pareto front and the chosen trial, and write its profile to PROFILE_PATH."""
    results = [TrialResult(**t.user_attrs["result"]) for t in study.trials if "result" in t.user_attrs]
    feasible = [r for r in results if r.state == "complete" and r.meets_budgets and r.same_as is None
                and all(r.values.get(OBJECTIVES[o]) is not None for o in objectives)]  # a repeated build counts once
    pareto = _pareto(feasible, [OBJECTIVES[o] for o in objectives])
    chosen = min(feasible, key=lambda r: (r.values["p90_ms"], r.values["size_kb"]), default=None)
    out = TuneResult(name, target, device, objectives, results, [r.number for r in pareto], chosen)
    if chosen is not None:
        out.profile = write_tuned_profile(chosen, target, profile_path, name, len(results))
    return out


def _pareto(results: list[TrialResult], keys: list[str]) -> list[TrialResult]:
    def dominated(a: TrialResult) -> bool:
        return any(
            all(b.values[k] <= a.values[k] for k in keys) and any(b.values[k] < a.values[k] for k in keys)
            for b in results if b is not a
        )

    return sorted((r for r in results if not dominated(r)), key=lambda r: r.number)


TUNED_MARK = "# Tuned by `edgepack tune`"


def tuned_path(name: str, target: str) -> Path:
    """Check the tuned profile's NAME and return its path, ./targets/NAME.yaml (the user's profile
    folder where ./targets holds the built-ins).

    Raises:
        EdgepackError: not a profile name, the target itself, or a file that a person wrote (never overwritten).
    """
    from edgepack.profile.edit import NAME_PATTERN
    from edgepack.profile.store import own_profile_dir

    if not NAME_PATTERN.match(name) or name == target or len(name) > 100:
        raise EdgepackError(
            f"--save-as {name[:60]}{'…' if len(name) > 60 else ''}: "
            + ("the tuned profile cannot replace the target it extends" if name == target
               else "longer than 100 characters" if len(name) > 100 else "not a profile name"),
            hint=f"use lower-case letters, digits, '.', '_' and '-', e.g. --save-as {target}-tuned",
        )
    path = own_profile_dir() / f"{name}.yaml"
    if path.is_dir():
        raise EdgepackError(f"{path} is a directory: the tuned profile cannot be written there", hint="move it aside, or pick another --save-as")
    try:
        ours = not path.exists() or path.read_text(errors="replace").startswith(TUNED_MARK)
    except OSError as exc:
        raise EdgepackError(f"{path}: cannot be read ({exc.strerror})", hint="fix its permissions, or pick another --save-as") from None
    if not ours:
        raise EdgepackError(f"{path} exists and was not written by edgepack tune: it is not replaced", hint="pick another --save-as")
    return path


def write_tuned_profile(chosen: TrialResult, target: str, path: Path, study: str, n_trials: int) -> Path:
    """Write PATH (./targets/NAME.yaml): the target extended by the chosen trial's settings as built, each commented with what it measured."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    from edgepack.atomic import cannot_write, write_atomic
    from edgepack.tuning.space import trial_settings

    v = chosen.values
    measured = f"p90 {v['p90_ms']:.3f} ms, {v['size_kb']:.1f} KB" + (f", peak {v['peak_mb']:.1f} MB" if v.get("peak_mb") else "")
    if v.get("accuracy") is not None:
        measured += f", accuracy {100 * v['accuracy']:.2f}%"
    elif v.get("top1_agreement") is not None:
        measured += f", top-1 agreement {100 * v['top1_agreement']:.2f}%"
    doc = CommentedMap(name=path.stem, extends=target)
    doc.yaml_set_start_comment(f"{TUNED_MARK[2:]} (study {study}): trial {chosen.number} of {n_trials}, the fastest meeting every budget.")
    params = dict(chosen.params, precision=chosen.built.get("precision") or chosen.params["precision"])  # what recovery made of it
    for name, settings in trial_settings(params).items():  # build:, and runtime: where runtime settings were searched
        build = CommentedMap()
        for key, value in settings.items():
            if isinstance(value, dict):
                section = CommentedMap(value)
                for sub in value:
                    section.yaml_add_eol_comment(f"trial {chosen.number}: {measured}", sub)
                build[key] = section
            else:
                build[key] = value
                build.yaml_add_eol_comment(f"trial {chosen.number}: {measured}", key)
        doc[name] = build
    import io

    buf = io.StringIO()
    YAML(typ="rt").dump(doc, buf)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buf.getvalue())
    except OSError as exc:
        raise cannot_write(path, exc, "the tuned profile") from None
    return path


