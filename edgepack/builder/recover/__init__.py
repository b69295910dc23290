"""Explain where quantization hurts a model, and recover from it automatically.

After a quantized build, `explain` measures the error each layer adds. When the fidelity gate
fails, or the quantizer raises, and the profile says `build.fallback: auto`, `recover` tries
variants in order of cost — another way to quantize the weights, then keeping the most sensitive
layers in float, added one by one by measured sensitivity — and keeps the first that meets every
budget. Each attempt is recorded, so a user sees what was tried, what it scored and what it cost.

Each format's explanation and recovery live in one module with one signature, chosen from
`RECOVERIES` as the exporters are chosen from `EXPORTERS`:

    explain(model, profile, calibration, sample, artifact) -> list[LayerError]
    recover(model, profile, calibration, evaluation, check, outcome) -> None
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from edgepack.builder.recover.common import (
    EXPLAIN_SAMPLES, SLOW_BY_DESIGN, TOP_LAYERS, Check, LayerError, Outcome, ladder, quantized, record_attempt, recoverable, try_variant, worst_first,
)
from edgepack.errors import BuildError
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import Format, Precision, Profile

RECOVERIES: dict[Format, str] = {
    Format.tflite: "edgepack.builder.recover.tflite",
    Format.onnx: "edgepack.builder.recover.onnx",
}


def recovery(fmt: Format) -> ModuleType | None:
    """Return the module that explains and recovers FMT's builds (None: the format has none)."""
    return importlib.import_module(RECOVERIES[fmt]) if fmt in RECOVERIES else None


def build_artifact(
    model: SourceModel, profile: Profile, calibration: Dataset | None, evaluation: Dataset, check: Check, explain: bool, stage,
    recover: bool = True,
) -> Outcome:
    """Export, verify, explain and, where the profile allows it (and RECOVER: the loss is quantization's), recover.

    Raises:
        BuildError: the export failed, and no other way of quantizing worked (the export's own
            error, with what else was tried in its details).
    """
    from edgepack.builder.convert import exporter

    b = profile.build
    can_recover = recover and recoverable(profile)
    outcome = Outcome(None, None, "plain")
    failure: BuildError | None = None
    with stage("convert", f"{b.format.value} {b.precision.value}"):
        try:
            outcome.artifact = exporter(b.format)(model, profile, calibration)
        except Exception as exc:  # with recovery, whatever the quantizer raises is a failed attempt
            if not (can_recover or (recover and ladder(profile))):
                raise
            failure = exc if isinstance(exc, BuildError) else BuildError(
                f"{b.format.value} {b.precision.value} conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                hint="try another build.precision",
            )
            outcome.attempts.append(record_attempt("plain", None, None, error=failure.message))
    if outcome.artifact is not None:
        with stage("verify", f"{len(evaluation)} samples"):
            outcome.fidelity = check(outcome.artifact)
            outcome.attempts.append(record_attempt("plain", outcome.artifact, outcome.fidelity))
    fidelity_failed = outcome.fidelity is None or outcome.fidelity.accuracy_failed
    if quantized(profile) and outcome.artifact is not None and (explain or fidelity_failed):
        with stage("explain", "per-layer error"):
            try:
                outcome.layers = explain_layers(model, profile, calibration, evaluation, outcome.artifact)
            except Exception as exc:  # the explanation is a diagnosis: it never fails the build
                outcome.explain_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    if can_recover and fidelity_failed:
        with stage("recover", "trying other ways to quantize"):
            try:
                recovery(b.format).recover(model, profile, calibration, evaluation, check, outcome)
            except Exception as exc:  # a quantizer, calibrator or debugger that raises is a failed attempt, never a crash
                outcome.attempts.append(record_attempt("layer fallback", None, None, error=one_line(exc)))
    rungs = ladder(profile) if recover else []
    if rungs and (outcome.fidelity is None or outcome.fidelity.accuracy_failed):
        with stage("ladder", " -> ".join(p.value for p in rungs)):
            climb(model, profile, calibration, check, outcome, rungs)
    recovered = outcome.strategy != "plain" and outcome.precision is not Precision.fp32
    if recovered and outcome.fidelity is not None and outcome.fidelity.passed and Precision.fp32 in rungs and runs_on_cpu(profile):
        with stage("speed", "the variant chosen against fp32 on this host"):
            no_slower_than_fp32(model, profile, calibration, evaluation, check, outcome)
    if outcome.artifact is None and failure is not None:
        failure.details += [f"also tried {a.strategy}: {a.error or 'missed the gate'}" for a in outcome.attempts[1:]]
        raise failure
    return outcome


def climb(model: SourceModel, profile: Profile, calibration: Dataset | None, check: Check, outcome: Outcome, rungs) -> None:
    """Build the artifact at each rung of the precision ladder in turn; keep the first that meets every budget."""
    from edgepack.builder.convert import exporter

    for precision in rungs:
        rung = profile.model_copy(update={"build": profile.build.model_copy(update={"precision": precision})})
        if try_variant(outcome, check, f"{precision.value} (precision ladder)", lambda r=rung: exporter(profile.build.format)(model, r, calibration)):
            outcome.precision = precision
            return


# A recovered variant this much slower than fp32 on the host is not worth its precision: well
# past timing noise (a mixed int8/float graph full of (de)quantize ops, a reference kernel).
SLOWER = 1.5
ACCELERATORS = ("gpu", "edgetpu", "hexagon", "nnapi", "coreml", "TensorrtExecutionProvider", "CUDAExecutionProvider")


def runs_on_cpu(profile: Profile) -> bool:
    """Whether the target runs on a CPU as the build host does: only then does the host's timing say anything."""
    from edgepack.profile.schema import Engine

    r = profile.runtime
    if r.engine is Engine.tensorrt:
        return False
    return not any(a.lower() in (x.lower() for x in r.delegates + r.providers) for a in ACCELERATORS)


def no_slower_than_fp32(model: SourceModel, profile: Profile, calibration: Dataset | None, evaluation: Dataset, check: Check, outcome: Outcome) -> None:
    """Hand over fp32 instead of a recovered variant that is slower than fp32 on this host.

    Only where the profile lets recovery climb to fp32 (`build.fallback`): otherwise the user has
    said fp32 is not an option, and the slower variant stays.
    """
    from edgepack.builder.convert import exporter
    from edgepack.builder.host_latency import compare_latency

    fp32 = profile.model_copy(update={"build": profile.build.model_copy(update={"precision": Precision.fp32})})
    try:
        reference = exporter(profile.build.format)(model, fp32, calibration)
        chosen_ms, fp32_ms = compare_latency(outcome.artifact, reference, evaluation.x)
    except Exception as exc:  # timing is advice: it never fails the build
        outcome.speed_note = f"could not compare its speed with fp32 on this host: {one_line(exc)}"
        return
    if chosen_ms <= SLOWER * fp32_ms:
        return
    if outcome.strategy in SLOW_BY_DESIGN:  # the precision asked for, at its size: slower, and it says so
        outcome.speed_note = f"{outcome.strategy} ran {chosen_ms:.3f} ms per sample on this host, fp32 {fp32_ms:.3f} ms"
        return
    chosen = outcome.strategy
    if try_variant(outcome, check, "fp32 (faster than the recovered variant)", lambda: reference):
        outcome.precision = Precision.fp32
        outcome.speed_note = f"{chosen} ran {chosen_ms:.3f} ms per sample on this host, fp32 {fp32_ms:.3f} ms: fp32 is handed over"


def one_line(exc: BaseException) -> str:
    """An exception as one line for an attempt row: its type and the first line of its message."""
    message = getattr(exc, "message", None) or (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {message[:200]}"


def explain_layers(model: SourceModel, profile: Profile, calibration: Dataset | None, evaluation: Dataset, artifact) -> list[LayerError]:
    """Return the layers with the largest quantization error, worst first (empty where not supported)."""
    module = recovery(profile.build.format)
    if module is None:
        return []
    sample = evaluation.take(np.arange(min(EXPLAIN_SAMPLES, len(evaluation))))
    return worst_first(module.explain(model, profile, calibration, sample, artifact))[:TOP_LAYERS]


def recovery_notes(outcome: Outcome, precision: Precision) -> list[str]:
    """Say what recovery did, why and what it cost, for the manifest and the build summary."""
    if outcome.strategy == "plain" or not outcome.attempts:
        return []
    plain = outcome.attempts[0]
    chosen = next(a for a in outcome.attempts if a.strategy == outcome.strategy and a.passed)
    why = f" ({plain.error or plain.failure})" if plain.error or plain.failure else ""
    cost = ""
    if plain.size_bytes and chosen.size_bytes:
        cost = f" at {chosen.size_bytes / plain.size_bytes:.2f}x the {precision.value} size ({(chosen.size_bytes - plain.size_bytes) / 1024:+.1f} KB)"
    kept = f" (kept in float: {', '.join(chosen.float_layers)})" if chosen.float_layers else ""
    notes = [f"plain {precision.value} missed the gate{why}; recovered with {outcome.strategy}{kept}{cost}"]
    return notes + ([outcome.speed_note] if outcome.speed_note else [])
