"""What each stage of a build runs: one function per stage, each taking the build's state.

`edgepack.builder.plan` puts these in the plan's stages, and the pipeline runs the plan's stages
in order; each function reads what the stages before it left in the `BuildState` and adds its own.
A stage says what it is doing now through `state.progress` (shown as the stage's detail):
progress(detail, kind=..., k=..., n=..., **figures) for a counted step (see `pipeline.Step`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from edgepack.builder.prune import Pruned
from edgepack.builder.recover.common import Outcome
from edgepack.builder.verify import Fidelity
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import Profile

MAX_EVAL_SAMPLES = 2000
SYNTHETIC_SAMPLES = 64


@dataclass
class BuildState:
    """What a build has made so far, handed from stage to stage."""

    plan: Any  # the edgepack.builder.plan.Plan being run
    tools: dict[str, str] = field(default_factory=dict)
    cache_key: Optional[str] = None  # where a passing bundle is cached (None: no cache)
    progress: Callable[..., None] = lambda detail, **data: None
    notes: list[str] = field(default_factory=list)
    original: Optional[SourceModel] = None
    model: Optional[SourceModel] = None  # what is converted: the original, or the pruned model
    calibration: Optional[Dataset] = None
    evaluation: Optional[Dataset] = None
    training: Optional[Dataset] = None  # fine-tuning data after pruning
    pruned: Optional[Pruned] = None
    pruned_fidelity: Optional[Fidelity] = None  # the pruned float model against the original
    outcome: Outcome = field(default_factory=lambda: Outcome(None, None, "plain"))
    manifest: Any = None  # the bundle's manifest as read back, once packaged

    @property
    def profile(self) -> Profile:
        return self.plan.profile

    @property
    def pruning_failed(self) -> bool:
        """A loss that pruning made is not quantization's: no way of quantizing wins it back."""
        return self.pruned_fidelity is not None and not self.pruned_fidelity.passed

    def check(self, artifact) -> Fidelity:
        """Verify ARTIFACT against the original: fidelity and every budget."""
        from edgepack.builder.verify import check_size, verify

        fidelity = verify(self.original, artifact, self.evaluation, self.profile)
        fidelity.failures += check_size(artifact.size_bytes, self.profile.budgets) + artifact.failures
        fidelity.passed = not fidelity.failures
        return fidelity


def load(state: BuildState) -> None:
    """Load the model (fixing its input shapes) and the data; split calibration from evaluation."""
    from edgepack.model.data import load_data, split, synthetic
    from edgepack.model.source import load_model

    plan, b, notes = state.plan, state.profile.build, state.notes
    original = load_model(plan.model, plan.data)
    notes.extend(original.load_notes)
    original, shape_notes = fix_shapes(original, plan)
    notes.extend(shape_notes)
    if original.onnx_model is not None and b.format.value != "onnx":
        from edgepack.model.onnx_tflite import ROUTE_NOTE, saved_model_for

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
    state.original = state.model = original
    state.calibration, state.evaluation, state.training = calibration, evaluation, calibration
    if b.prune.sparsity > 0 or b.prune.channels > 0:
        if plan.train_data:
            state.training = load_data(plan.train_data, original.inputs, original.outputs)
        elif b.prune.fine_tune_epochs > 0 and original.keras_model is not None:
            notes.append(f"fine-tuned on the {len(calibration)} calibration samples only: --train-data gives it more to learn from")


def fix_shapes(original, plan):
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


def prune(state: BuildState) -> None:
    """Prune the model as the profile says (fine-tuning, where planned, is the next stage)."""
    from edgepack.builder import prune as pruning

    state.pruned = pruning.prune(state.original, state.profile.build.prune)
    state.model = state.pruned.model


def fine_tune(state: BuildState) -> None:
    """Fine-tune the pruned model on the --train-data, else the calibration data."""
    from edgepack.builder import prune as pruning

    state.pruned = pruning.fine_tune(state.original, state.pruned, state.training, state.profile.build.prune, state.progress)
    state.model = state.pruned.model


def verify_pruned(state: BuildState) -> None:
    """Compare the pruned float model with the original; where it misses the gate, prune less, as far down as the profile allows."""
    from edgepack.builder import prune as pruning

    profile, b = state.profile, state.profile.build
    state.pruned_fidelity = compare_models(state.original, state.model, state.evaluation, profile)
    lost = state.pruned_fidelity.failures[0] if not state.pruned_fidelity.passed else None
    for sparsity in pruning.lower_sparsities(b.prune) if not state.pruned_fidelity.passed else []:
        less = b.prune.model_copy(update={"sparsity": sparsity})
        state.progress(f"at sparsity {sparsity:.0%}")
        state.pruned = pruning.prune(state.original, less)
        if pruning.fine_tunes(state.original, less):
            state.pruned = pruning.fine_tune(state.original, state.pruned, state.training, less, state.progress)
        state.model = state.pruned.model
        less_profile = profile.model_copy(update={"build": b.model_copy(update={"prune": less})})
        state.pruned_fidelity = compare_models(state.original, state.model, state.evaluation, less_profile)
        held = state.pruned_fidelity.passed
        state.notes.append(f"pruning at {b.prune.sparsity:.0%} missed the gate ({lost}); tried {sparsity:.0%}: {'holds' if held else 'misses it too'}")
        if held:
            break


def compare_models(original, pruned, evaluation, profile: Profile):
    """The pruned float model's answers against the original's, judged by the same gate as an artifact."""
    from edgepack.builder.verify import compare

    names = [s.name for s in original.outputs]
    return compare(original.predict(evaluation.x), pruned.predict(evaluation.x), evaluation.y, profile.budgets.max_accuracy_drop, names, profile.verify)


def convert(state: BuildState) -> None:
    """Export the artifact at the profile's precision."""
    from edgepack.builder.recover.engine import export_plain

    recovers = (state.plan.layer_fallback or bool(state.plan.rungs)) and not state.pruning_failed
    export_plain(state.model, state.profile, state.calibration, state.outcome, recovers)


def verify(state: BuildState) -> None:
    """Verify the artifact against the original; explain the layers where it misses the gate (or --explain)."""
    from edgepack.builder.recover.engine import verify_plain

    plan = state.plan
    verify_plain(state.model, state.profile, state.calibration, state.evaluation, state.check, state.outcome, plan.quantized, plan.explain, state.progress)
    name_layers_after_source(state)


def name_layers_after_source(state: BuildState) -> None:
    """Name the layers in the explanation and in recovery's attempts as the user wrote them: the PyTorch module, the ONNX node."""
    if state.original.onnx_model is None:
        return
    from edgepack.builder.convert.source_names import name_layers

    artifact = state.outcome.artifact
    name_layers(state.outcome, state.original.onnx_model, artifact.files[artifact.artifact] if artifact else None, state.profile.build.format.value)


def recover(state: BuildState) -> None:
    """Where the artifact misses the gate: other ways to quantize, layers kept in float, the precision ladder."""
    from edgepack.builder.recover.engine import recover_or_fail, recovery_notes

    plan, allowed = state.plan, not state.pruning_failed  # a loss that pruning made is not quantization's
    layer_fallback, rungs = plan.layer_fallback and allowed, plan.rungs if allowed else []
    recover_or_fail(state.model, state.profile, state.calibration, state.evaluation, state.check, state.outcome, layer_fallback, rungs, state.progress)
    name_layers_after_source(state)
    state.notes += recovery_notes(state.outcome, state.profile.build.precision)
