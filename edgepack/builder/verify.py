"""Check that an artifact still answers like the original model, and that it meets the budgets."""

from __future__ import annotations

import numpy as np

from edgepack.builder.convert import Artifact
from edgepack.bundle import Fidelity
from edgepack.errors import DataError
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import Budgets


def compare(
    reference: list[np.ndarray], candidate: list[np.ndarray], labels: np.ndarray | None, max_accuracy_drop: float
) -> Fidelity:
    """Compare the artifact's outputs with the original's; the first output decides top-1 and accuracy.

    Raises:
        DataError: the labels name classes the model's first output does not have.
    """
    errors = [np.abs(r.astype(np.float64) - c.astype(np.float64)) for r, c in zip(reference, candidate)]
    f = Fidelity(
        n_samples=len(reference[0]),
        max_abs_error=float(max(e.max() for e in errors)),
        mean_abs_error=float(np.mean(np.concatenate([e.ravel() for e in errors]))),
    )
    ref, cand = reference[0], candidate[0]
    if labels is not None and ref.ndim == 2 and len(labels) and labels.max() >= ref.shape[1]:
        raise DataError(
            f"labels y include class {int(labels.max())}, but the model answers {ref.shape[1]} classes (0..{ref.shape[1] - 1})",
            hint="check that the labels belong to this model (and are numbered from 0)",
        )
    broken = [i for i, c in enumerate(candidate) if not np.isfinite(c).all()]
    if broken:  # an overflow (fp16) or a broken kernel: no figure below means anything
        f.failures.append(f"the artifact answers NaN or infinite values (output {', '.join(map(str, broken))}): it does not work")
    if ref.ndim == 2 and ref.shape[1] > 1:
        f.top1_agreement = float(np.mean(ref.argmax(1) == cand.argmax(1)))
        if labels is not None and labels.ndim == 1:
            f.accuracy_original = float(np.mean(ref.argmax(1) == labels))
            f.accuracy_artifact = float(np.mean(cand.argmax(1) == labels))
            f.accuracy_drop = f.accuracy_original - f.accuracy_artifact
    if f.accuracy_drop is not None and f.accuracy_drop > max_accuracy_drop + 1e-9:
        f.failures.append(
            f"accuracy dropped {100 * f.accuracy_drop:.2f} points ({100 * f.accuracy_original:.2f}% -> "
            f"{100 * f.accuracy_artifact:.2f}%), budget {100 * max_accuracy_drop:.2f}: missed by "
            f"{100 * (f.accuracy_drop - max_accuracy_drop):.2f} points"
        )
    elif f.accuracy_drop is None and f.top1_agreement is not None and f.top1_agreement < 1 - max_accuracy_drop - 1e-9:
        f.failures.append(
            f"top-1 agreement with the original is {100 * f.top1_agreement:.2f}%, budget "
            f"{100 * (1 - max_accuracy_drop):.2f}%: missed by {100 * (1 - max_accuracy_drop - f.top1_agreement):.2f} points"
        )
    f.accuracy_failed = bool(f.failures)
    f.passed = not f.failures
    return f


def check_size(size_bytes: int, budgets: Budgets) -> list[str]:
    """Return the size-budget failure, if any."""
    kb = size_bytes / 1024
    if budgets.max_model_kb is not None and kb > budgets.max_model_kb:
        return [f"model is {kb:.1f} KB, budget {budgets.max_model_kb:.0f} KB: missed by {kb - budgets.max_model_kb:.1f} KB"]
    return []


def verify(original: SourceModel, artifact: Artifact, evaluation: Dataset, max_accuracy_drop: float) -> Fidelity:
    """Run ORIGINAL and ARTIFACT on EVALUATION and compare them."""
    reference = original.predict(evaluation.x)
    candidate = artifact.predict(evaluation.x, [s.name for s in original.inputs], [s.name for s in original.outputs])
    return compare(reference, candidate, evaluation.y, max_accuracy_drop)
