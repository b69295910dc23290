"""Recovery's orchestration: export, verify and explain the plain artifact, then recover where the profile allows.

The build runs these as its plan's stages (`edgepack.builder.plan`): `export_plain` (convert),
`verify_plain` (verify, and explain where the gate is missed), `recover_or_fail` (recover: layer
fallback through the format's module, the precision ladder, the speed check against fp32).
The scheme and the per-format modules: `edgepack.builder.recover`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgepack.builder.recover import recovery
from edgepack.builder.recover.common import (
    EXPLAIN_SAMPLES, SLOW_BY_DESIGN, TOP_LAYERS, Check, LayerError, Outcome, record_attempt, try_variant, worst_first,
)
from edgepack.errors import BuildError
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import Precision, Profile

Progress = Callable[..., None]  # says what a stage is doing now: progress(detail, kind=, k=, n=, **figures)


def export_plain(model: SourceModel, profile: Profile, calibration: Dataset | None, outcome: Outcome, recovers: bool) -> None:
    """Export the artifact as the profile says. Where RECOVERS (the plan may recover, and a loss would be
    quantization's), whatever the quantizer raises is the first failed attempt: `recover_or_fail` re-raises it."""
    from edgepack.builder.convert import exporter

    b = profile.build
    try:
        outcome.artifact = exporter(b.format)(model, profile, calibration)
    except Exception as exc:  # with recovery, whatever the quantizer raises is a failed attempt
        if not recovers:
            raise
        failure = exc if isinstance(exc, BuildError) else BuildError(
            f"{b.format.value} {b.precision.value} conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            hint="try another build.precision",
        )
        outcome.failure = failure
        outcome.attempts.append(record_attempt("plain", None, None, error=failure.message))


def verify_plain(
    model: SourceModel, profile: Profile, calibration: Dataset | None, evaluation: Dataset, check: Check, outcome: Outcome,
    quantized: bool, explain: bool, progress: Progress,
) -> None:
    """Verify the exported artifact; where it is QUANTIZED and misses the gate (or EXPLAIN), measure the error each layer adds."""
    if outcome.artifact is not None:
        outcome.fidelity = check(outcome.artifact)
        outcome.attempts.append(record_attempt("plain", outcome.artifact, outcome.fidelity))
    fidelity_failed = outcome.fidelity is None or outcome.fidelity.accuracy_failed
    if quantized and outcome.artifact is not None and (explain or fidelity_failed):
        progress("explain: per-layer error")
        try:
            outcome.layers = explain_layers(model, profile, calibration, evaluation, outcome.artifact)
        except Exception as exc:  # the explanation is a diagnosis: it never fails the build
            outcome.explain_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def recover_or_fail(
    model: SourceModel, profile: Profile, calibration: Dataset | None, evaluation: Dataset, check: Check, outcome: Outcome,
    layer_fallback: bool, rungs: list[Precision], progress: Progress,
) -> None:
    """Where the plain artifact misses the gate: other ways to quantize (LAYER_FALLBACK), then the
    precision ladder's RUNGS, then the speed check — as far as the plan allows (none where the loss is pruning's).

    Raises:
        BuildError: the export failed, and no other way of quantizing worked (the export's own
            error, with what else was tried in its details).
    """
    b = profile.build
    fidelity_failed = outcome.fidelity is None or outcome.fidelity.accuracy_failed
    if layer_fallback and fidelity_failed:
        progress("trying other ways to quantize")
        outcome.on_attempt = announce(outcome, progress, None)
        try:
            recovery(b.format).recover(model, profile, calibration, evaluation, check, outcome)
        except Exception as exc:  # a quantizer, calibrator or debugger that raises is a failed attempt, never a crash
            outcome.attempts.append(record_attempt("layer fallback", None, None, error=one_line(exc)))
    if rungs and (outcome.fidelity is None or outcome.fidelity.accuracy_failed):
        progress("ladder: " + " -> ".join(p.value for p in rungs))
        outcome.on_attempt = announce(outcome, progress, len(outcome.attempts) + len(rungs))
        climb(model, profile, calibration, check, outcome, rungs)
    outcome.on_attempt = None
    recovered = outcome.strategy != "plain" and outcome.precision is not Precision.fp32
    if recovered and outcome.fidelity is not None and outcome.fidelity.passed and Precision.fp32 in rungs and runs_on_cpu(profile):
        progress("speed: the variant chosen against fp32 on this host")
        no_slower_than_fp32(model, profile, calibration, evaluation, check, outcome)
    failure = outcome.failure
    if outcome.artifact is None and failure is not None:
        failure.details += [f"also tried {a.strategy}: {a.error or 'missed the gate'}" for a in outcome.attempts[1:]]
        raise failure


def announce(outcome: Outcome, progress: Progress, n: int | None) -> Callable[[str], None]:
    """Tell PROGRESS of each attempt as it starts: attempt k (of N, where known; the plain build is
    attempt 1), what it tries, and how the attempt before it fared (its top-1 or worst SQNR)."""

    def on_attempt(strategy: str) -> None:
        k = len(outcome.attempts) + 1
        last = outcome.attempts[-1] if outcome.attempts else None
        figure = None
        if last is not None and last.error is None:
            figure = f"top-1 {100 * last.top1_agreement:.1f}%" if last.top1_agreement is not None else (
                f"SQNR {last.worst_sqnr_db:.1f} dB" if last.worst_sqnr_db is not None else None)
        said = f"attempt {k}" + (f" of {n}" if n else "") + f": {strategy}"
        if last is not None:
            said += f" (after {last.strategy}: {figure or last.error or 'missed the gate'})"
        progress(said, kind="attempt", k=k, n=n, tries=strategy, last=last.strategy if last else None, last_figure=figure)

    return on_attempt


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
    if outcome.precision is Precision.fp32 and outcome.layers:  # nothing at the precision asked for held: say where it broke
        notes.append(f"no {precision.value} variant met the budgets; the layers with the largest error: {', '.join(e.layer for e in outcome.layers[:3])}")
    return notes + ([outcome.speed_note] if outcome.speed_note else [])
