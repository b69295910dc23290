"""Turn a profile and the user's inputs into the build's stages, checked before any work.

Each stage carries what it runs (a function of the build's state, `edgepack.builder.steps`):
the pipeline runs the plan's stages in order, and `edgepack build --dry-run` prints the same plan.
`plan_build` is the one planner both call: it resolves the target's profile and makes the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from edgepack.builder import steps
from edgepack.builder.accelerator import accelerators, check_accelerator
from edgepack.builder.convert import EXPORTERS
from edgepack.builder.package import package
from edgepack.builder.recover.common import ladder, quantized, recoverable
from edgepack.errors import BuildError, DataError, ModelError
from edgepack.profile.schema import Format, Precision, Profile


@dataclass
class Stage:
    name: str
    detail: str
    run: Callable[[steps.BuildState], None]  # what the stage does to the build's state


@dataclass
class Plan:
    model: Path
    profile: Profile
    out: Path
    data: Optional[Path]
    eval_data: Optional[Path]
    synthetic_calibration: bool
    stages: list[Stage] = field(default_factory=list)
    explain: bool = False  # per-layer quantization error even when the build passes
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # --input-shape, by input name
    train_data: Optional[Path] = None  # fine-tuning data after pruning (--train-data), apart from calibration and evaluation
    # What the profile's precision allows, resolved once here: the stages only read it.
    quantized: bool = False  # a precision below fp32: per-layer errors can be explained
    layer_fallback: bool = False  # recovery may try other ways to quantize and layers kept in float
    rungs: list[Precision] = field(default_factory=list)  # the precision ladder recovery may climb


def plan_build(
    model: Path,
    target: str,
    data: Path | None = None,
    eval_data: Path | None = None,
    out: Path | None = None,
    synthetic_calibration: bool = False,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    train_data: Path | None = None,
    catalog=None,
    explain: bool = False,
) -> Plan:
    """Resolve TARGET's profile and make the plan for building MODEL with it (see `make_plan`).

    Raises:
        EdgepackError: an unknown or invalid target, or anything `make_plan` refuses.
    """
    from edgepack.profile.store import Catalog

    profile = (catalog or Catalog()).load(target).profile
    plan = make_plan(Path(model), profile, data, eval_data, out, synthetic_calibration, input_shapes, train_data)
    plan.explain = explain
    return plan


def default_out(model: Path, target: str) -> Path:
    """build/<model>-<target>; a factory `pkg.mod:make` is named `pkg.mod-make` (no ':' in a folder name)."""
    from edgepack.model.torch_source import is_factory

    name = str(model).replace(":", "-") if is_factory(model) else Path(model).stem
    return Path("build") / f"{name}-{target}"


def bundle_out(out: Path) -> Path:
    """Check that OUT may receive a bundle: it is new, or a bundle an earlier build wrote (replaced).

    Raises:
        BuildError: OUT is a file, the working directory or one above it, or a directory that is
            not a bundle or holds anything else (it is never overwritten).
    """
    from edgepack.bundle import check_replaceable

    out = Path(out).resolve()
    here = Path.cwd().resolve()
    if out == here or out in here.parents:
        raise BuildError(
            f"{out} is the working directory{'' if out == here else ' or holds it'}: edgepack will not replace it",
            hint="pick a new directory for --out, e.g. --out build/my-model",
        )
    check_replaceable(out)
    if out.parent.exists() and not out.parent.is_dir():
        raise BuildError(f"{out.parent} is a file, so {out} cannot be created", hint="pick another --out")
    return out


def make_plan(
    model: Path,
    profile: Profile,
    data: Path | None = None,
    eval_data: Path | None = None,
    out: Path | None = None,
    synthetic_calibration: bool = False,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    train_data: Path | None = None,
) -> Plan:
    """Check that PROFILE can be built from what was given and list the stages.

    Raises:
        BuildError: a format this builder cannot make, channel pruning of an ONNX or PyTorch model,
            or --input-shape for a Keras model.
        DataError: int8 or pruning recovery without data.
    """
    b = profile.build
    from edgepack.model.torch_source import is_factory, is_torch

    if not Path(model).exists() and not is_factory(model):
        raise ModelError(f"{model}: no such file or directory", hint="check the model path")
    for path in (data, eval_data, train_data):
        if path is not None and not Path(path).exists():
            raise DataError(f"{path}: no such file or directory", hint="check the --data / --eval-data / --train-data path")
    if profile.verify.metric:  # a metric that cannot be loaded is refused before any work
        from edgepack.builder.verify import user_metric

        user_metric(profile.verify.metric)
    onnx_source = Path(model).suffix.lower() == ".onnx"
    # The profile schema already checked format and precision against the runtime
    # (schema.ENGINE_SUPPORT); EXPORTERS says which formats this edgepack can produce.
    if b.format not in EXPORTERS:
        raise BuildError(
            f"target '{profile.name}' needs format {b.format.value}, which this edgepack cannot build yet",
            hint="pick a TFLite target: edgepack targets list --family raspberry-pi",
        )
    torch_source = is_torch(model)
    if torch_source:  # a PyTorch model is exported to ONNX and built from that graph, as an ONNX source is
        from edgepack.model.torch_source import require_torch

        require_torch()
        onnx_source = True
    if onnx_source and b.prune.channels > 0:
        raise BuildError(
            f"target '{profile.name}' prunes channels, which edgepack cannot do to an ONNX graph (it rebuilds Keras layers)",
            hint="set build.prune.channels: 0 (build.prune.sparsity works on ONNX weights), or build from the Keras model",
        )
    if input_shapes and not onnx_source:
        raise BuildError(
            f"--input-shape fixes ONNX input sizes; {model} is not an ONNX model",
            hint="drop --input-shape: a Keras model's input sizes are set in the model",
        )
    if b.precision is Precision.int8 and data is None and not synthetic_calibration:
        raise DataError(
            f"target '{profile.name}' builds full-integer int8, which needs calibration data",
            hint="pass --data FILE (.npz with x, .npy, or an image folder); "
            "--synthetic-calibration calibrates on random inputs instead (expect lower accuracy)",
        )
    pruning = b.prune.sparsity > 0 or b.prune.channels > 0
    fine_tune = pruning and b.prune.fine_tune_epochs > 0 and not onnx_source  # an ONNX graph has no training loop here
    if fine_tune and data is None:
        raise DataError(
            f"target '{profile.name}' prunes the model and fine-tunes it afterwards, which needs data",
            hint="pass --data FILE, or set build.prune.fine_tune_epochs: 0",
        )
    plan = Plan(Path(model), profile, bundle_out(Path(out) if out else default_out(model, profile.name)), data, eval_data, synthetic_calibration)
    plan.input_shapes = dict(input_shapes or {})
    plan.train_data = Path(train_data) if train_data else None
    shapes = ", ".join(f"{n or 'input'}:{'x'.join(map(str, d))}" for n, d in plan.input_shapes.items())
    exported = ", exported to ONNX (torch.onnx, dynamo)" if torch_source else ""
    plan.stages.append(Stage("load", f"{model}{exported}" + (f", input shape {shapes}" if shapes else ""), steps.load))
    if pruning:
        no_tune = " (ONNX weights: no fine-tuning)" if onnx_source and b.prune.fine_tune_epochs > 0 else ""
        plan.stages.append(Stage("prune", f"sparsity {b.prune.sparsity:.0%}, channels {b.prune.channels:.0%}{no_tune}", steps.prune))
        if fine_tune:
            on = f"{train_data}" if train_data else "the calibration data"
            detail = f"at most {b.prune.fine_tune_epochs} epochs on {on}, {b.prune.schedule.value} sparsity, early stopping"
            plan.stages.append(Stage("fine-tune", detail, steps.fine_tune))
        lower = f"; where it misses the gate, sparsity down to {b.prune.min_sparsity:.0%}" if b.prune.min_sparsity is not None else ""
        plan.stages.append(Stage("verify-pruned", f"the pruned float model against the original{lower}", steps.verify_pruned))
    calibration = ""
    if b.precision is Precision.int8:
        source = "SYNTHETIC random inputs" if data is None else f"{data}"
        calibration = f", calibrated on up to {b.calibration_samples} samples of {source}"
    io = f", {b.io_dtype.value} input/output" if b.precision is Precision.int8 else ""
    if b.format is Format.onnx and b.precision is Precision.int8:
        io = f" (QDQ, {b.onnx.calibration_method.value} calibration)" + io
    detail = f"{b.format.value} {b.precision.value}{io}{calibration}"
    if onnx_source and b.format is not Format.onnx:
        detail = "ONNX -> SavedModel (onnx2tf), then " + detail
    if b.format is Format.tflite_micro:
        detail += "; TFLite Micro op check, tensor arena, flash/RAM fit, C source"
    plan.stages.append(Stage("convert", detail, steps.convert))
    evaluation = eval_data or data
    budgets = profile.budgets
    plan.stages.append(
        Stage(
            "verify",
            f"against the original on {evaluation or 'SYNTHETIC random inputs'}; "
            f"max accuracy drop {budgets.max_accuracy_drop:.2%}"
            + (f", max model {budgets.max_model_kb:.0f} KB" if budgets.max_model_kb else ""),
            steps.verify,
        )
    )
    plan.quantized, plan.layer_fallback, plan.rungs = quantized(profile), recoverable(profile), ladder(profile)
    ways = (["other ways to quantize, layers kept in float"] if plan.layer_fallback else []) + (
        ["precision ladder " + " -> ".join(p.value for p in plan.rungs)] if plan.rungs else []
    )
    if ways:
        plan.stages.append(Stage("recover", "where the gate is missed: " + "; ".join(ways), steps.recover))
    if accelerators(profile):
        least = budgets.min_accelerated_fraction
        detail = f"the ops {', '.join(accelerators(profile))} will take and refuse" + (f"; at least {least:.0%} of them" if least else "")
        plan.stages.append(Stage("accelerator", detail, check_accelerator))
    plan.stages.append(Stage("package", f"{plan.out}/", package))
    return plan
