"""What recovery records and shares across formats: attempts, outcomes, per-layer errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from edgepack.builder.convert import Artifact
from edgepack.builder.verify import Fidelity
from edgepack.errors import BuildError
from edgepack.profile.schema import Fallback, Format, Precision, Profile

EXPLAIN_SAMPLES = 32
MAX_FLOAT_LAYERS = 8
TOP_LAYERS = 10

Check = Callable[[Artifact], Fidelity]  # verifies an artifact: fidelity + every budget


@dataclass
class LayerError:
    tensor: str  # the layer's output tensor in the artifact (what selective quantization names)
    layer: str  # a short name for people
    op: str
    error: float
    measure: str
    order: int = 0  # position of the op in the graph: among equal errors, the earliest is the cause


@dataclass
class Attempt:
    strategy: str
    float_layers: list[str] = field(default_factory=list)
    size_bytes: Optional[int] = None
    top1_agreement: Optional[float] = None
    accuracy_drop: Optional[float] = None
    passed: bool = False
    error: Optional[str] = None  # what the quantizer raised, when it raised
    failure: Optional[str] = None  # the first budget it missed, when it missed one
    worst_sqnr_db: Optional[float] = None  # of its dense outputs, where it has any

    @property
    def score(self) -> float:
        """How close it came: top-1 agreement where there are class scores, else its worst dense output's SQNR."""
        if self.top1_agreement is not None:
            return self.top1_agreement
        return self.worst_sqnr_db if self.worst_sqnr_db is not None else float("-inf")


@dataclass
class Outcome:
    artifact: Optional[Artifact]
    fidelity: Optional[Fidelity]
    strategy: str
    attempts: list[Attempt] = field(default_factory=list)
    layers: list[LayerError] = field(default_factory=list)
    explain_error: Optional[str] = None  # why there is no per-layer table, where it could not be made
    precision: Optional[Precision] = None  # the rung of the precision ladder chosen, where recovery climbed it
    speed_note: Optional[str] = None  # what the comparison with fp32 on the host found, where it changed or failed
    failure: Optional[BuildError] = None  # what the plain export raised, re-raised where nothing else works
    on_attempt: Optional[Callable[[str], None]] = field(default=None, repr=False, compare=False)  # hears each variant's strategy as it starts

    def facts(self) -> dict:
        return {
            "strategy": self.strategy,
            "attempts": [asdict(a) for a in self.attempts],
            "layer_errors": [asdict(e) for e in self.layers],
            "explain_error": self.explain_error,
        }


def short_layer(tensor: str) -> str:
    """'sequential/dense_1/MatMul;sequential/dense_1/Relu' -> 'dense_1'."""
    parts = tensor.split(";")[0].split("/")
    return parts[-2] if len(parts) >= 2 else parts[0]


def quantized(profile: Profile) -> bool:
    return profile.build.precision is not Precision.fp32


# The (format, precision) pairs `recover` has strategies for.
RECOVERABLE = {(f, p) for f in (Format.tflite, Format.onnx) for p in (Precision.int8, Precision.fp16)}


# The precision ladder: where a precision cannot meet the budgets, even with layers kept in float,
# the rungs above it, cheapest first. fp16 keeps 11 significant bits and a range of 65504 at half
# fp32's size (CPUs without fp16 arithmetic compute it in fp32: about fp32's speed); fp32 is the
# original's own arithmetic, the last resort. Two variants stay in int8's family, at about int8's
# size, so each format's int8 recovery tries them itself, after the int8 variants and before these:
# int8 weights with float activations (WEIGHT_ONLY), and 16-bit activations x int8 weights.
LADDER: dict[Precision, tuple[Precision, ...]] = {
    Precision.int8: (Precision.fp16, Precision.fp32),
    Precision.dynamic_int8: (Precision.fp16, Precision.fp32),
    Precision.fp16: (Precision.fp32,),
}


# TFLite's 16x8 mode: int8's family and about its size, run by reference kernels. Its slowness is
# known and said in its name, so the speed check reports it rather than trading it for fp32.
INT16_ACTIVATIONS = "int16 activations x int8 weights (16x8: TFLite runs it on reference kernels, slower than int8)"
SLOW_BY_DESIGN = {INT16_ACTIVATIONS}

# Int8 weights read through dequantize ops, activations in float: about int8's size, fp32's
# arithmetic (at about fp32's speed, not int8's), and only the weights' rounding error, so it holds
# where 8-bit activations cannot. 16-bit activations keep the same int8 weights and add their own
# error, so once this has missed the gate they are not tried.
WEIGHT_ONLY = "int8 weights x float activations (fp32's arithmetic at about int8's size)"
WEIGHT_ONLY_MISSED = "not tried: they keep the same int8 weights, and int8 weights with float activations already missed the gate"


# int8 layer fallback helps where a few layers make most of the error; it stops once keeping more
# layers in float has not improved the answers for PATIENCE layers in a row. (fp16 fallback is not
# cut short: an overflow spoils every later layer, so nothing improves until the one that
# overflows is kept, and each step re-measures which that is.)
DOMINANCE = 2.0  # a layer stands out when its error is at least twice the median layer's
PATIENCE = 2


def why_not_layers(errors: list[LayerError]) -> Optional[str]:
    """None when a few layers dominate the error, so that keeping them in float can help; else why not."""
    values = sorted(e.error for e in errors if e.error > 0)
    if not values:
        return "no layer has a measurable error"
    if len(values) < 3:  # one or two layers: they are the few
        return None
    median, worst = values[len(values) // 2], values[-1]
    if worst < DOMINANCE * median:
        return f"no layer stands out (worst {worst:.3g}, median {median:.3g} {errors[0].measure})"
    return None


def stalled(attempts: list[Attempt]) -> bool:
    """Whether the last PATIENCE layer-fallback ATTEMPTS did no better than the ones before them."""
    if len(attempts) <= PATIENCE:
        return False
    return max(a.score for a in attempts[-PATIENCE:]) <= max(a.score for a in attempts[:-PATIENCE])


def skip_layers(outcome: Outcome, reason: str) -> None:
    """Record that layer fallback was not tried, and why (the precision ladder goes on)."""
    outcome.attempts.append(Attempt("layer fallback", error=f"not tried: {reason}"))


def layers_worth_trying(outcome: Outcome, errors: list[LayerError]) -> bool:
    """Whether a few layers dominate ERRORS; where not, record why layer fallback is not tried."""
    reason = why_not_layers(errors)
    if reason:
        skip_layers(outcome, reason)
    return reason is None


def recoverable(profile: Profile) -> bool:
    """Whether layer fallback may run: recovery allowed, and a strategy for the format and precision."""
    b = profile.build
    return b.fallback is not Fallback.off and (b.format, b.precision) in RECOVERABLE


def ladder(profile: Profile) -> list[Precision]:
    """The rungs above the profile's precision that recovery may climb to: the runtime runs them,
    the profile allows them (`build.fallback`), and they keep the profile's float input and output."""
    from edgepack.profile.schema import ENGINE_SUPPORT, IoDtype

    b = profile.build
    if b.fallback is Fallback.off or b.io_dtype is not IoDtype.float32:
        return []
    _, runs = ENGINE_SUPPORT[profile.runtime.engine]
    allowed = set(b.fallback) if isinstance(b.fallback, list) else set(Precision)
    return [p for p in LADDER.get(b.precision, ()) if p in runs and p in allowed]


def record_attempt(strategy: str, artifact: Artifact | None, fidelity: Fidelity | None, error: str | None = None, float_layers=None) -> Attempt:
    return Attempt(
        strategy=strategy,
        float_layers=list(float_layers or []),
        size_bytes=artifact.size_bytes if artifact else None,
        top1_agreement=fidelity.top1_agreement if fidelity else None,
        accuracy_drop=fidelity.accuracy_drop if fidelity else None,
        passed=bool(fidelity and fidelity.passed),
        error=error,
        failure=fidelity.failures[0] if fidelity and fidelity.failures else None,
        worst_sqnr_db=min((o.sqnr_db for o in fidelity.outputs if o.kind == "dense"), default=None) if fidelity else None,
    )


def worst_first(errors: list[LayerError]) -> list[LayerError]:
    return sorted(errors, key=lambda e: (-e.error, e.order))


def try_variant(outcome: Outcome, check: Check, strategy: str, make: Callable[[], Artifact], float_layers=()) -> bool:
    """Build one variant, verify it, record it; adopt it when it meets every budget."""
    if outcome.on_attempt is not None:
        outcome.on_attempt(strategy)
    try:
        artifact = make()
        fidelity = check(artifact)
    except Exception as exc:  # a quantizer that raises is a failed attempt, never a crash
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        outcome.attempts.append(record_attempt(strategy, None, None, error=message))
        return False
    outcome.attempts.append(record_attempt(strategy, artifact, fidelity, float_layers=float_layers))
    if fidelity.passed:
        outcome.artifact, outcome.fidelity, outcome.strategy = artifact, fidelity, strategy
    return fidelity.passed
