"""Check that an artifact still answers like the original model, and that it meets the budgets.

Every output is compared with the original's on the evaluation data, and the worst decides:
- a `classes` output (class scores, inferred for a 2-D output with more than one column) by top-1
  agreement and, for the first one where labels are given, accuracy;
- a `dense` output (maps, boxes, embeddings, regressions: anything else) by its signal-to-noise
  ratio (SQNR, on the output's variation around its mean, so an offset cannot hide a broken map)
  and its cosine similarity with the original, per sample.
Every output also reports its error relative to its range. A profile declares kinds per output
(`verify.outputs`), changes the dense budget (`verify.min_sqnr_db`, `verify.min_cosine`), and
plugs in a task metric (`verify.metric`).
"""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from edgepack.builder.convert import Artifact
from edgepack.bundle import Fidelity, OutputFidelity
from edgepack.errors import BuildError, DataError, ProfileError
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import Budgets, OutputKind, Profile, Verify

SQNR_CAP_DB = 150.0  # about float32's own noise floor: identical outputs measure infinite


def output_kind(reference: np.ndarray, labels_fit: bool = False) -> OutputKind:
    """Infer an output's kind: class scores are (N, C), C > 1, and either probabilities (each row
    non-negative, summing to 1) or what the labels name; anything else (boxes, embeddings, logits
    without labels) is judged as dense, so that no number an app reads escapes the gate."""
    if reference.ndim != 2 or reference.shape[1] < 2:
        return OutputKind.dense
    probabilities = bool(np.all(reference >= 0) and np.allclose(reference.sum(axis=1), 1, atol=1e-3))
    return OutputKind.classes if probabilities or labels_fit else OutputKind.dense


def _sqnr(signal: float, noise: float, scale: float) -> float:
    """10 log10(signal / noise), capped; where the reference does not vary, the noise against its scale instead."""
    if noise == 0:
        return SQNR_CAP_DB
    if not np.isfinite(noise):
        return -SQNR_CAP_DB
    if signal <= (1e-6 * scale) ** 2:  # a constant output: its variation says nothing, its size does
        signal = scale**2
    return float(np.clip(10 * np.log10(signal / noise), -SQNR_CAP_DB, SQNR_CAP_DB)) if signal > 0 else 0.0


def output_fidelity(name: str, kind: OutputKind, reference: np.ndarray, candidate: np.ndarray) -> OutputFidelity:
    """Measure how far CANDIDATE is from REFERENCE (one output, all samples).

    SQNR is the worse of two: against the output's variation over all samples, and against each
    sample's variation around its own mean (so a per-sample offset, as in depth maps, cannot hide
    a flat answer). Cosine is per sample, on values centred per sample where a sample has more
    than one; a sample whose reference does not vary agrees when its error is within 0.1% of the
    output's scale.
    """
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    cand = candidate.astype(np.float64).reshape(len(candidate), -1)
    err = np.abs(ref - cand)
    scale = float(np.max(np.abs(ref))) or 1.0
    sqnr = _sqnr(float(np.var(ref)), float(np.mean(err**2)), scale)
    if ref.shape[1] > 1:
        ref_c = ref - ref.mean(axis=1, keepdims=True)
        cand_c = cand - cand.mean(axis=1, keepdims=True)
        within = float(np.mean(ref_c**2))
        if within > (1e-6 * scale) ** 2:
            sqnr = min(sqnr, _sqnr(within, float(np.mean((ref_c - cand_c) ** 2)), scale))
    else:
        ref_c, cand_c = ref, cand
    norms = np.linalg.norm(ref_c, axis=1) * np.linalg.norm(cand_c, axis=1)
    flat = np.linalg.norm(ref_c, axis=1) <= 1e-6 * scale * np.sqrt(ref.shape[1])
    close = err.max(axis=1) <= 1e-3 * scale
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(flat, close.astype(np.float64), np.sum(ref_c * cand_c, axis=1) / np.where(norms > 0, norms, 1))
    span = float(ref.max() - ref.min()) or scale
    out = OutputFidelity(
        name=name,
        kind=kind.value,
        sqnr_db=sqnr,
        cosine=float(np.mean(cos)) if np.isfinite(cos).all() else 0.0,
        max_rel_error=float(err.max()) / span,
        mean_rel_error=float(err.mean()) / span,
    )
    if kind is OutputKind.classes:  # at every position: the class axis is the last
        out.top1_agreement = float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))
    return out


def compare(
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    labels: np.ndarray | None,
    max_accuracy_drop: float,
    names: list[str] | None = None,
    settings: Verify | None = None,
) -> Fidelity:
    """Compare the artifact's outputs with the original's, output by output; the worst decides.

    Raises:
        DataError: the labels name classes the model's first output does not have.
    """
    settings = settings or Verify()
    names = names or [f"output_{i}" for i in range(len(reference))]
    errors = [np.abs(r.astype(np.float64) - c.astype(np.float64)) for r, c in zip(reference, candidate)]
    f = Fidelity(
        n_samples=len(reference[0]),
        max_abs_error=float(max(e.max() for e in errors)),
        mean_abs_error=float(np.mean(np.concatenate([e.ravel() for e in errors]))),
    )
    unknown = sorted(set(settings.outputs) - set(names))
    if unknown:
        raise ProfileError(f"verify.outputs names {', '.join(unknown)}, which the model does not have", hint=f"its outputs: {', '.join(names)}")
    for name, r in zip(names, reference):
        if settings.outputs.get(name) == OutputKind.classes and (r.ndim < 2 or r.shape[-1] < 2):
            raise ProfileError(f"verify.outputs: {name} has shape {r.shape[1:]}, not class scores", hint=f"declare it dense: verify: {{outputs: {{{name}: dense}}}}")
    # Labels belong to the first output that can hold them (2-D class scores).
    labelled = next((i for i, r in enumerate(reference) if r.ndim == 2 and r.shape[1] > 1 and settings.outputs.get(names[i]) != OutputKind.dense), None)
    if labels is not None and labelled is not None and len(labels) and labels.max() >= reference[labelled].shape[1]:
        width = reference[labelled].shape[1]
        raise DataError(
            f"labels y include class {int(labels.max())}, but the model answers {width} classes (0..{width - 1})",
            hint="check that the labels belong to this model (and are numbered from 0)",
        )
    broken = [i for i, c in enumerate(candidate) if not np.isfinite(c).all()]
    if broken:  # an overflow (fp16) or a broken kernel: no figure below means anything
        f.failures.append(f"the artifact answers NaN or infinite values ({', '.join(names[i] for i in broken)}): it does not work")
    kinds = [
        OutputKind(settings.outputs[n]) if n in settings.outputs else output_kind(r, labels_fit=labels is not None and i == labelled)
        for i, (n, r) in enumerate(zip(names, reference))
    ]
    f.outputs = [output_fidelity(n, k, r, c) for n, k, r, c in zip(names, kinds, reference, candidate)]
    for i in broken:
        f.outputs[i].passed = False
    first_classes = next((o for o in f.outputs if o.kind == OutputKind.classes.value), None)
    if first_classes is not None:
        f.top1_agreement = first_classes.top1_agreement
    if labels is not None and labels.ndim == 1 and labelled is not None and kinds[labelled] is OutputKind.classes:
        ref, cand = reference[labelled], candidate[labelled]
        f.accuracy_original = float(np.mean(ref.argmax(1) == labels))
        f.accuracy_artifact = float(np.mean(cand.argmax(1) == labels))
        f.accuracy_drop = f.accuracy_original - f.accuracy_artifact
    if f.accuracy_drop is not None and f.accuracy_drop > max_accuracy_drop + 1e-9:
        f.failures.append(
            f"accuracy dropped {100 * f.accuracy_drop:.2f} points ({100 * f.accuracy_original:.2f}% -> "
            f"{100 * f.accuracy_artifact:.2f}%), budget {100 * max_accuracy_drop:.2f}: missed by "
            f"{100 * (f.accuracy_drop - max_accuracy_drop):.2f} points"
        )
    for i, o in enumerate(f.outputs):
        if o.kind == OutputKind.classes.value and not (i == labelled and f.accuracy_drop is not None):
            if o.top1_agreement < 1 - max_accuracy_drop - 1e-9:
                o.passed = False
                f.failures.append(
                    f"top-1 agreement with the original is {100 * o.top1_agreement:.2f}%"
                    + ("" if len(f.outputs) == 1 else f" on {o.name}")
                    + f", budget {100 * (1 - max_accuracy_drop):.2f}%: missed by {100 * (1 - max_accuracy_drop - o.top1_agreement):.2f} points"
                )
        elif o.kind == OutputKind.dense.value and (o.sqnr_db < settings.min_sqnr_db or o.cosine < settings.min_cosine):
            o.passed = False
            f.failures.append(
                f"{o.name} differs from the original's: SQNR {o.sqnr_db:.1f} dB (budget {settings.min_sqnr_db:g}), "
                f"cosine {o.cosine:.4f} (budget {settings.min_cosine:g}), max error {100 * o.max_rel_error:.1f}% of its range"
            )
    if settings.metric:
        value = user_metric(settings.metric)(reference, candidate, labels)
        f.metric = value
        low, high = settings.metric_min, settings.metric_max
        if (low is not None and value < low) or (high is not None and value > high):
            bound = f"at least {low:g}" if low is not None else f"at most {high:g}"
            f.failures.append(f"verify.metric {settings.metric} is {value:.4g}, budget {bound}")
    f.accuracy_failed = bool(f.failures)
    f.passed = not f.failures
    return f


def user_metric(spec: str) -> Callable[..., float]:
    """Return the function SPEC ("package.module:function") names, wrapped to return a float.

    Raises:
        ProfileError: the module cannot be imported or has no such function.
    """
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ProfileError(
            f"verify.metric {spec}: cannot load it: {type(exc).__name__}: {exc}",
            hint="give an importable 'package.module:function' (on PYTHONPATH) taking (reference, candidate, labels)",
        ) from None

    def metric(reference, candidate, labels) -> float:
        try:
            value = float(fn(reference, candidate, labels))
        except Exception as exc:
            raise BuildError(f"verify.metric {spec} raised {type(exc).__name__}: {exc}", hint="fix the metric function") from None
        if not np.isfinite(value):
            raise BuildError(f"verify.metric {spec} returned {value}", hint="the metric must return a finite number")
        return value

    return metric


def check_size(size_bytes: int, budgets: Budgets) -> list[str]:
    """Return the size-budget failure, if any."""
    kb = size_bytes / 1024
    if budgets.max_model_kb is not None and kb > budgets.max_model_kb:
        return [f"model is {kb:.1f} KB, budget {budgets.max_model_kb:.0f} KB: missed by {kb - budgets.max_model_kb:.1f} KB"]
    return []


def verify(original: SourceModel, artifact: Artifact, evaluation: Dataset, profile: Profile) -> Fidelity:
    """Run ORIGINAL and ARTIFACT on EVALUATION and compare them, output by output."""
    reference = original.predict(evaluation.x)
    names = [s.name for s in original.outputs]
    candidate = artifact.predict(evaluation.x, [s.name for s in original.inputs], names)
    return compare(reference, candidate, evaluation.y, profile.budgets.max_accuracy_drop, names, profile.verify)
