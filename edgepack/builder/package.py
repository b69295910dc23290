"""The build's last stage: the manifest of what was made and how it compares, the bundle, the cache.

A build that misses a budget still writes its bundle (status "failed") for inspection; only a
bundle that reads back and passes is cached.
"""

from __future__ import annotations

from importlib import metadata

from edgepack._version import __version__
from edgepack.builder import cache
from edgepack.builder.memory import peak_rss_mb
from edgepack.builder.steps import BuildState
from edgepack.bundle import Facts, Manifest, QuantizationFacts, SourceInfo, Status, now_utc, read_manifest, write_bundle

REFERENCE_SAMPLES = 8
TOOLS = ("tensorflow", "keras", "ai-edge-litert", "numpy", "onnx", "onnxruntime", "tf2onnx", "onnxconverter-common", "tflite-micro", "torch", "onnxscript")


def tool_versions() -> dict[str, str]:
    """Return the versions of edgepack and the tools that decide an artifact (those installed)."""
    versions = {"edgepack": __version__}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def package(state: BuildState) -> None:
    """Write the bundle: artifact files, manifest and reference inputs/outputs; cache it where it passes."""
    manifest, files, reference = make_manifest(state)
    write_bundle(state.plan.out, manifest, files, reference)
    state.manifest = read_manifest(state.plan.out)  # before caching: only what reads back is ever cached
    if state.cache_key and state.manifest.passed:
        cache.store(state.plan.out, state.cache_key)


def stage_losses(pruned, final) -> str:
    """Say how much of the loss each stage made: 'pruning -5.20 points, quantization -0.10 (accuracy)'."""
    if pruned.accuracy_drop is not None and final.accuracy_drop is not None:
        return f"accuracy: pruning {-100 * pruned.accuracy_drop:+.2f} points, quantization {-100 * (final.accuracy_drop - pruned.accuracy_drop):+.2f}"
    if pruned.top1_agreement is not None and final.top1_agreement is not None:
        return f"top-1 agreement: pruning {100 * (pruned.top1_agreement - 1):+.2f} points, quantization {100 * (final.top1_agreement - pruned.top1_agreement):+.2f}"
    worst = min(pruned.outputs, key=lambda o: o.sqnr_db) if pruned.outputs else None
    return f"pruning alone: SQNR {worst.sqnr_db:.1f} dB on {worst.name}" if worst else "pruning: no comparable figure"


def make_manifest(state: BuildState) -> tuple[Manifest, dict, dict]:
    """Return the manifest, the artifact's files and the reference inputs/outputs of what the stages made."""
    from edgepack.builder.layers import layer_precisions

    plan, profile, outcome, original, evaluation = state.plan, state.profile, state.outcome, state.original, state.evaluation
    b = profile.build
    artifact, fidelity, pruned = outcome.artifact, outcome.fidelity, state.pruned_fidelity
    notes = list(state.notes)  # recovery's notes among them, where a recover stage ran
    if pruned is not None:
        fidelity.pruning = pruned
        notes.append(stage_losses(pruned, fidelity))
        if state.pruning_failed and not fidelity.passed:
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
        calibration_samples_used=len(state.calibration),
        evaluation_samples=len(evaluation),
        synthetic_calibration=plan.synthetic_calibration,
        data_preparation=evaluation.notes,
        peak_rss_mb=round(peak_rss_mb(), 1),  # this process's peak so far: the build's own
    )
    if plan.input_shapes:
        settings["input_shapes"] = {s.name: list(s.shape) for s in original.inputs}
    if state.pruned is not None:
        settings["prune_result"] = state.pruned.report.__dict__
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
        tools=state.tools,
        notes=notes + fidelity.failures,
    )
    return manifest, artifact.files, reference
