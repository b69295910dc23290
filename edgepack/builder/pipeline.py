"""The build: load, prune, fine-tune, convert, verify, package — with a cache in front."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgepack._version import __version__
from edgepack.builder import cache
from edgepack.builder.plan import Plan, make_plan
from edgepack.builder.prune import PruneReport
from edgepack.bundle import (
    LOADER_SOURCE, Facts, Manifest, QuantizationFacts, SourceInfo, Status, now_utc, read_manifest, sha256_file, write_bundle,
)
from edgepack.profile.schema import Profile
from edgepack.quiet import quiet
from edgepack.profile.store import Catalog

# Called as on_stage(name, detail, seconds): seconds is None when the stage starts.
OnStage = Callable[[str, str, Optional[float]], None]
REFERENCE_SAMPLES = 8
MAX_EVAL_SAMPLES = 2000
SYNTHETIC_SAMPLES = 64
TOOLS = ("tensorflow", "keras", "ai-edge-litert", "numpy", "onnx", "onnxruntime", "tf2onnx", "onnxconverter-common", "tflite-micro", "torch", "onnxscript")


@dataclass
class BuildResult:
    bundle: Path
    manifest: Manifest
    cached: bool
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.manifest.passed

    @property
    def failures(self) -> list[str]:
        return list(self.manifest.fidelity.failures)

    @property
    def size_bytes(self) -> int:
        return next(f.bytes for f in self.manifest.files if f.path == self.manifest.artifact)


def tool_versions() -> dict[str, str]:
    versions = {"edgepack": __version__}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def build(
    model: Path,
    target: str,
    data: Path | None = None,
    eval_data: Path | None = None,
    out: Path | None = None,
    use_cache: bool = True,
    synthetic_calibration: bool = False,
    on_stage: OnStage | None = None,
    catalog: Catalog | None = None,
    explain: bool = False,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    train_data: Path | None = None,
) -> BuildResult:
    """Build MODEL for TARGET into a bundle directory.

    A build that misses a budget still writes its bundle (status "failed") for inspection; the
    result says so, and the caller decides the exit code. INPUT_SHAPES (input name, or "" for
    the only input -> dimensions) fixes dynamic dimensions of an ONNX build (`--input-shape`).

    Raises:
        EdgepackError: bad input of any kind, before anything is written.
    """
    from edgepack.model.source import sha256_path

    profile = (catalog or Catalog()).load(target).profile
    plan = make_plan(Path(model), profile, data, eval_data, out, synthetic_calibration, input_shapes, train_data)
    plan.explain = explain
    report = on_stage or (lambda *_: None)
    timings: dict[str, float] = {}

    @contextmanager
    def stage(name: str, detail: str = ""):
        report(name, detail, None)
        start = time.perf_counter()
        with quiet():
            yield
        timings[name] = time.perf_counter() - start
        report(name, detail, timings[name])

    tools = tool_versions()
    key = None
    if use_cache:
        data_sha = ":".join(sha256_path(Path(p)) if p else "-" for p in (data, eval_data, train_data))
        # The whole resolved profile, not just `build`: the manifest carries it, and `bench` reads
        # its bench settings and budgets from there, so a changed budget must not hit an old entry.
        settings = {"profile": profile.model_dump(mode="json"), "synthetic": synthetic_calibration}
        # A cached bundle carries the loader for apps as it was: a changed loader is a new build.
        settings["loader_sha256"] = sha256_file(LOADER_SOURCE)
        if plan.input_shapes:
            settings["input_shapes"] = {k: list(v) for k, v in plan.input_shapes.items()}
        key = cache.cache_key(sha256_path(plan.model), data_sha, settings, tools)
        if cache.lookup(key) and not explain:  # a cached build has no per-layer table to show
            with stage("cache", "hit: an identical build is cached"):
                cache.restore(key, plan.out)
            return BuildResult(plan.out, read_manifest(plan.out), cached=True, stage_seconds=timings)

    manifest, files, reference = _run(plan, profile, tools, stage)
    with stage("package", f"{plan.out}/"):
        write_bundle(plan.out, manifest, files, reference)
        written = read_manifest(plan.out)  # before caching: only what reads back is ever cached
        if key and written.passed:
            cache.store(plan.out, key)
    return BuildResult(plan.out, written, cached=False, stage_seconds=timings)


def lower_sparsities(prune) -> list[float]:
    """The sparsities to fall back to when pruning loses too much: 10 points at a time, down to `min_sparsity`."""
    if prune.min_sparsity is None or prune.sparsity <= prune.min_sparsity:
        return []
    steps = int(np.ceil(round((prune.sparsity - prune.min_sparsity) / 0.1, 6)))
    return [round(max(prune.min_sparsity, prune.sparsity - 0.1 * i), 4) for i in range(1, steps + 1)]


def compare_models(original, pruned, evaluation, profile: Profile):
    """The pruned float model's answers against the original's, judged by the same gate as an artifact."""
    from edgepack.builder.verify import compare

    names = [s.name for s in original.outputs]
    return compare(original.predict(evaluation.x), pruned.predict(evaluation.x), evaluation.y, profile.budgets.max_accuracy_drop, names, profile.verify)


def stage_losses(pruned, final) -> str:
    """Say how much of the loss each stage made: 'pruning -5.20 points, quantization -0.10 (accuracy)'."""
    if pruned.accuracy_drop is not None and final.accuracy_drop is not None:
        return f"accuracy: pruning {-100 * pruned.accuracy_drop:+.2f} points, quantization {-100 * (final.accuracy_drop - pruned.accuracy_drop):+.2f}"
    if pruned.top1_agreement is not None and final.top1_agreement is not None:
        return f"top-1 agreement: pruning {100 * (pruned.top1_agreement - 1):+.2f} points, quantization {100 * (final.top1_agreement - pruned.top1_agreement):+.2f}"
    worst = min(pruned.outputs, key=lambda o: o.sqnr_db) if pruned.outputs else None
    return f"pruning alone: SQNR {worst.sqnr_db:.1f} dB on {worst.name}" if worst else "pruning: no comparable figure"


def _run(plan: Plan, profile: Profile, tools: dict, stage) -> tuple[Manifest, dict, dict]:
    from edgepack.builder.recover import build_artifact, recovery_notes
    from edgepack.builder.recover.tflite import layer_precisions
    from edgepack.builder.verify import check_size, verify
    from edgepack.model.data import load_data, split, synthetic
    from edgepack.model.source import load_model

    b = profile.build
    notes: list[str] = []
    with stage("load", str(plan.model)):
        original = load_model(plan.model, plan.data)
        notes.extend(original.load_notes)
        original, shape_notes = _fix_shapes(original, plan)
        notes.extend(shape_notes)
        if original.onnx_model is not None and b.format.value != "onnx":
            from edgepack.builder.convert.onnx_tflite import ROUTE_NOTE, saved_model_for

            saved_model_for(original.onnx_model, str(plan.model))  # an op onnx2tf cannot convert fails here, once, not in each recovery attempt
            notes.append(ROUTE_NOTE)
        if plan.data:
            data = load_data(plan.data, original.inputs, original.outputs)
            held_out = load_data(plan.eval_data, original.inputs, original.outputs) if plan.eval_data else None
            notes += [f"{d.source}: {d.notes['labels']}" for d in (data, held_out) if d is not None and "labels" in d.notes]
            calibration, evaluation = split(data, b.calibration_samples, held_out)
        else:
            calibration = evaluation = synthetic(original.inputs, SYNTHETIC_SAMPLES)
            notes.append("no data given: verified on SYNTHETIC random inputs, which says little about accuracy")
            if plan.synthetic_calibration:
                notes.append("int8 calibrated on SYNTHETIC random inputs: activation ranges are guesses; expect lower accuracy")
        if len(evaluation) > MAX_EVAL_SAMPLES:
            evaluation = evaluation.take(np.arange(MAX_EVAL_SAMPLES))

    model, prune_report, pruned = original, None, None
    if b.prune.sparsity > 0 or b.prune.channels > 0:
        training = calibration
        if plan.train_data:
            training = load_data(plan.train_data, original.inputs, original.outputs)
        elif b.prune.fine_tune_epochs > 0 and original.keras_model is not None:
            notes.append(f"fine-tuned on the {len(calibration)} calibration samples only: --train-data gives it more to learn from")
        model, prune_report = _prune(original, training, profile, stage)
        with stage("verify-pruned", "the pruned float model against the original"):
            pruned = compare_models(original, model, evaluation, profile)
        # A pruning loss is won back by pruning less, as far down as the profile allows.
        lost = pruned.failures[0] if not pruned.passed else None
        for sparsity in lower_sparsities(b.prune) if not pruned.passed else []:
            less = profile.model_copy(update={"build": b.model_copy(update={"prune": b.prune.model_copy(update={"sparsity": sparsity})})})
            model, prune_report = _prune(original, training, less, stage)
            with stage("verify-pruned", f"at sparsity {sparsity:.0%}"):
                pruned = compare_models(original, model, evaluation, less)
            notes.append(f"pruning at {b.prune.sparsity:.0%} missed the gate ({lost}); tried {sparsity:.0%}: {'holds' if pruned.passed else 'misses it too'}")
            if pruned.passed:
                break

    def check(artifact):
        fidelity = verify(original, artifact, evaluation, profile)
        fidelity.failures += check_size(artifact.size_bytes, profile.budgets) + artifact.failures
        fidelity.passed = not fidelity.failures
        return fidelity

    # A loss that pruning made is not quantization's: no way of quantizing wins it back.
    pruning_failed = pruned is not None and not pruned.passed
    outcome = build_artifact(model, profile, calibration, evaluation, check, plan.explain, stage, recover=not pruning_failed)
    artifact, fidelity = outcome.artifact, outcome.fidelity
    if original.onnx_model is not None:  # layers named as the user wrote them: the PyTorch module, the ONNX node
        from edgepack.builder.convert.source_names import name_layers

        name_layers(outcome, original.onnx_model, artifact.files[artifact.artifact] if artifact else None, b.format.value)
    notes += recovery_notes(outcome, b.precision)
    if pruned is not None:
        fidelity.pruning = pruned
        notes.append(stage_losses(pruned, fidelity))
        if pruning_failed and not fidelity.passed:
            fidelity.failures.insert(0, f"pruning alone misses the gate ({pruned.failures[0]}): quantization is not the cause")
            notes.append(
                "lower build.prune.sparsity / build.prune.channels, or fine-tune longer (build.prune.fine_tune_epochs); "
                "recovery did not try other ways to quantize"
            )

    n_ref = min(REFERENCE_SAMPLES, len(evaluation))
    ref_inputs = [x[:n_ref] for x in evaluation.x]
    reference = {f"in_{i}": x for i, x in enumerate(ref_inputs)}
    reference.update({f"out_{i}": y for i, y in enumerate(original.predict(ref_inputs))})

    settings = b.model_dump(mode="json")
    settings.update(
        precision_used=(outcome.precision or b.precision).value,  # the rung recovery chose, where it climbed the ladder
        data=str(plan.data) if plan.data else None,
        eval_data=str(plan.eval_data) if plan.eval_data else None,
        train_data=str(plan.train_data) if plan.train_data else None,
        calibration_samples_used=len(calibration),
        evaluation_samples=len(evaluation),
        synthetic_calibration=plan.synthetic_calibration,
        data_preparation=evaluation.notes,
    )
    if plan.input_shapes:
        settings["input_shapes"] = {s.name: list(s.shape) for s in original.inputs}
    if prune_report:
        settings["prune_result"] = prune_report.__dict__
    manifest = Manifest(
        created=now_utc(),
        status=Status.ok if fidelity.passed else Status.failed,
        target=profile.name,
        artifact=artifact.artifact,
        format=b.format,
        precision=outcome.precision or b.precision,  # the rung recovery chose, where it climbed the ladder
        source=SourceInfo(path=str(plan.model), kind=original.kind, sha256=original.sha256, params=original.params),
        profile=profile,
        build=settings,
        inputs=artifact.inputs,
        outputs=artifact.outputs,
        facts=Facts(**artifact.facts, quantization=QuantizationFacts(**outcome.facts(), layers=layer_precisions(artifact, original))),
        fidelity=fidelity,
        tools=tools,
        notes=notes + fidelity.failures,
    )
    return manifest, artifact.files, reference


def _fix_shapes(original, plan: Plan):
    """Apply --input-shape; without data, pin an ONNX model's dynamic batch to 1. Return (model, notes)."""
    from edgepack.model.input_shape import pin_dynamic_dims, with_input_shapes

    if plan.input_shapes:
        original = with_input_shapes(original, plan.input_shapes)
    dynamic = original.dynamic_inputs() if original.kind == "onnx" else {}
    if not dynamic:
        return original, []
    if plan.data is None:
        return pin_dynamic_dims(original), [f"no data: the dynamic batch dimension of {', '.join(dynamic)} is pinned to 1"]
    described = "; ".join(f"'{name}' ({', '.join(dims)})" for name, dims in dynamic.items())
    return original, [f"dynamic input dimensions {described}: calibrated and verified at the data's size; the artifact keeps them dynamic"]


def _prune(original, training, profile: Profile, stage):
    """Prune ORIGINAL as the profile says and fine-tune it on TRAINING (the --train-data, else the calibration data)."""
    from edgepack.builder import prune
    from edgepack.errors import BuildError

    p = profile.build.prune
    if original.onnx_model is not None:
        return _prune_onnx(original, p, stage)
    if original.keras_model is None:
        raise BuildError(
            f"{original.path}: pruning needs a Keras model; a SavedModel has no layers edgepack can edit",
            hint="build from the .keras file, or set build.prune.sparsity and build.prune.channels to 0",
        )
    import keras

    from edgepack.model.source import SourceModel

    tuned = None
    with stage("prune", f"sparsity {p.sparsity:.0%}, channels {p.channels:.0%}"):
        working = keras.models.clone_model(original.keras_model)
        working.set_weights(original.keras_model.get_weights())
        removed: dict[str, int] = {}
        if p.channels > 0:
            working, removed = prune.channel_prune(working, p.channels)
        # Without fine-tuning, all of the sparsity at once; with it, on the way (the schedule).
        masks = prune.magnitude_masks(working, p.sparsity) if p.sparsity > 0 and p.fine_tune_epochs == 0 else []
    if p.fine_tune_epochs > 0:
        targets, loss, how = prune.recovery_objective(original.predict(training.x), training.y)
        with stage("fine-tune", f"at most {p.fine_tune_epochs} epochs on {len(training)} samples, {how}, {p.schedule.value}"):
            masks, tuned = prune.fine_tune(working, training.x, targets, loss, p, p.sparsity)
    report = PruneReport(
        params_before=original.params,
        params_after=int(working.count_params()),
        sparsity=prune.measured_sparsity(masks) if masks else 0.0,
        channels_removed=removed,
        fine_tune=tuned.__dict__ if tuned else None,
    )
    pruned = SourceModel(original.path, "keras", original.sha256, original.inputs, original.outputs, keras_model=working)
    return pruned, report


def _prune_onnx(original, p, stage):
    from dataclasses import replace

    from edgepack.builder import prune_onnx
    from edgepack.errors import BuildError

    if p.channels > 0:
        raise BuildError(
            f"{original.path}: channel pruning rebuilds Keras layers; it cannot edit an ONNX graph",
            hint="set build.prune.channels: 0 (build.prune.sparsity works on ONNX weights), or build from the Keras model",
        )
    with stage("prune", f"sparsity {p.sparsity:.0%} of ONNX weights"):
        pruned, sparsity, _ = prune_onnx.magnitude_prune(original.onnx_model, p.sparsity)
    report = PruneReport(params_before=original.params, params_after=original.params, sparsity=sparsity)
    return replace(original, onnx_model=pruned, _runner=None), report
