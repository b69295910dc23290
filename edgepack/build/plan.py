"""Turn a profile and the user's inputs into the list of build stages, checked before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edgepack.build.convert import EXPORTERS
from edgepack.errors import BuildError, DataError
from edgepack.profile.schema import Precision, Profile


@dataclass
class Stage:
    name: str
    detail: str


@dataclass
class Plan:
    model: Path
    profile: Profile
    out: Path
    data: Optional[Path]
    eval_data: Optional[Path]
    synthetic_calibration: bool
    stages: list[Stage] = field(default_factory=list)

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


def default_out(model: Path, target: str) -> Path:
    return Path("build") / f"{Path(model).stem}-{target}"


def make_plan(
    model: Path,
    profile: Profile,
    data: Path | None = None,
    eval_data: Path | None = None,
    out: Path | None = None,
    synthetic_calibration: bool = False,
) -> Plan:
    """Check that PROFILE can be built from what was given and list the stages.

    Raises:
        BuildError: a format this builder cannot make.
        DataError: int8 or pruning recovery without data.
    """
    b = profile.build
    # The profile schema already checked format and precision against the runtime
    # (schema.ENGINE_SUPPORT); EXPORTERS says which formats this edgepack can produce.
    if b.format not in EXPORTERS:
        raise BuildError(
            f"target '{profile.name}' needs format {b.format.value}, which this edgepack cannot build yet",
            hint="pick a TFLite target: edgepack targets list --family raspberry-pi",
        )
    if b.precision is Precision.int8 and data is None and not synthetic_calibration:
        raise DataError(
            f"target '{profile.name}' builds full-integer int8, which needs calibration data",
            hint="pass --data FILE (.npz with x, .npy, or an image folder); "
            "--synthetic-calibration calibrates on random inputs instead (expect lower accuracy)",
        )
    pruning = b.prune.sparsity > 0 or b.prune.channels > 0
    if pruning and b.prune.fine_tune_epochs > 0 and data is None:
        raise DataError(
            f"target '{profile.name}' prunes the model and fine-tunes it afterwards, which needs data",
            hint="pass --data FILE, or set build.prune.fine_tune_epochs: 0",
        )
    plan = Plan(Path(model), profile, Path(out) if out else default_out(model, profile.name), data, eval_data, synthetic_calibration)
    plan.stages.append(Stage("load", f"{model}"))
    if pruning:
        plan.stages.append(Stage("prune", f"sparsity {b.prune.sparsity:.0%}, channels {b.prune.channels:.0%}"))
        if b.prune.fine_tune_epochs > 0:
            plan.stages.append(Stage("fine-tune", f"{b.prune.fine_tune_epochs} epochs on the calibration data"))
    calibration = ""
    if b.precision is Precision.int8:
        source = "SYNTHETIC random inputs" if data is None else f"{data}"
        calibration = f", calibrated on up to {b.calibration_samples} samples of {source}"
    io = f", {b.io_dtype.value} input/output" if b.precision is Precision.int8 else ""
    plan.stages.append(Stage("convert", f"{b.format.value} {b.precision.value}{io}{calibration}"))
    evaluation = eval_data or data
    budgets = profile.budgets
    plan.stages.append(
        Stage(
            "verify",
            f"against the original on {evaluation or 'SYNTHETIC random inputs'}; "
            f"max accuracy drop {budgets.max_accuracy_drop:.2%}"
            + (f", max model {budgets.max_model_kb:.0f} KB" if budgets.max_model_kb else ""),
        )
    )
    plan.stages.append(Stage("package", f"{plan.out}/"))
    return plan
