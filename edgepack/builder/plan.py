"""Turn a profile and the user's inputs into the list of build stages, checked before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edgepack.builder.convert import EXPORTERS
from edgepack.errors import BuildError, DataError, ModelError
from edgepack.profile.schema import Format, Precision, Profile


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
    explain: bool = False  # per-layer quantization error even when the build passes
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # --input-shape, by input name
    train_data: Optional[Path] = None  # fine-tuning data after pruning (--train-data), apart from calibration and evaluation


def default_out(model: Path, target: str) -> Path:
    return Path("build") / f"{Path(model).stem}-{target}"


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
        BuildError: a format this builder cannot make, an ONNX model for a TFLite target, channel
            pruning of an ONNX model, or --input-shape for a non-ONNX target.
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
    plan.stages.append(Stage("load", f"{model}{exported}" + (f", input shape {shapes}" if shapes else "")))
    if pruning:
        no_tune = " (ONNX weights: no fine-tuning)" if onnx_source and b.prune.fine_tune_epochs > 0 else ""
        plan.stages.append(Stage("prune", f"sparsity {b.prune.sparsity:.0%}, channels {b.prune.channels:.0%}{no_tune}"))
        if fine_tune:
            on = f"{train_data}" if train_data else "the calibration data"
            plan.stages.append(Stage("fine-tune", f"at most {b.prune.fine_tune_epochs} epochs on {on}, {b.prune.schedule.value} sparsity, early stopping"))
    calibration = ""
    if b.precision is Precision.int8:
        source = "SYNTHETIC random inputs" if data is None else f"{data}"
        calibration = f", calibrated on up to {b.calibration_samples} samples of {source}"
    io = f", {b.io_dtype.value} input/output" if b.precision is Precision.int8 else ""
    if b.format is Format.onnx and b.precision is Precision.int8:
        io = f" (QDQ, {b.onnx.calibration_method.value} calibration)" + io
    plan.stages.append(Stage("convert", f"{b.format.value} {b.precision.value}{io}{calibration}"))
    if onnx_source and b.format is not Format.onnx:
        plan.stages[-1].detail = "ONNX -> SavedModel (onnx2tf), then " + plan.stages[-1].detail
    if b.format is Format.tflite_micro:
        plan.stages[-1].detail += "; TFLite Micro op check, tensor arena, flash/RAM fit, C source"
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
