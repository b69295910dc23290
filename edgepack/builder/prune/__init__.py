"""Pruning, the build's step before quantization: one module per source format, chosen from `PRUNERS`.

Each module has one signature (imported lazily: Keras and ONNX are heavy):

    prune(original, settings) -> Pruned            # settings: the profile's build.prune
    tune(original, pruned, training, settings, progress) -> Pruned   # only formats with a training loop

`keras` removes channels and zeroes weights, and fine-tunes towards the labels or the original's
answers; `onnx` zeroes the weights of an ONNX graph's kernels (no training loop: no fine-tuning).
Where pruning loses too much, the build prunes less, as far down as `build.prune.min_sparsity`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgepack.errors import BuildError
from edgepack.model.source import SourceModel

PRUNERS: dict[str, str] = {
    "keras": "edgepack.builder.prune.keras",
    "onnx": "edgepack.builder.prune.onnx",
}


@dataclass
class PruneReport:
    params_before: int
    params_after: int
    sparsity: float = 0.0  # fraction of zeros in the pruned kernels
    channels_removed: dict[str, int] = field(default_factory=dict)  # layer -> filters/units removed
    fine_tune: dict[str, Any] | None = None  # FineTuneReport's fields, where the model was fine-tuned


@dataclass
class Pruned:
    """What the prune step made: the pruned model, what was done, and (Keras) the model fine-tuning goes on with."""

    model: SourceModel
    report: PruneReport
    working: Any = None  # the Keras model being pruned, where there is one


def pruner(original: SourceModel):
    """Return the module that prunes ORIGINAL's kind of model.

    Raises:
        BuildError: a model edgepack cannot prune (a SavedModel has no layers to edit).
    """
    kind = "onnx" if original.onnx_model is not None else "keras" if original.keras_model is not None else None
    if kind is None:
        raise BuildError(
            f"{original.path}: pruning needs a Keras model; a SavedModel has no layers edgepack can edit",
            hint="build from the .keras file, or set build.prune.sparsity and build.prune.channels to 0",
        )
    return importlib.import_module(PRUNERS[kind])


def prune(original: SourceModel, settings) -> Pruned:
    """Prune ORIGINAL as SETTINGS (build.prune) say, without fine-tuning it."""
    return pruner(original).prune(original, settings)


def fine_tunes(original: SourceModel, settings) -> bool:
    """Whether the pruned model is fine-tuned afterwards: asked for, and a model with a training loop here."""
    return settings.fine_tune_epochs > 0 and hasattr(pruner(original), "tune")


def fine_tune(original: SourceModel, pruned: Pruned, training, settings, progress: Callable[[str], None]) -> Pruned:
    """Fine-tune PRUNED on TRAINING towards ORIGINAL's labels or answers."""
    return pruner(original).tune(original, pruned, training, settings, progress)


def lower_sparsities(settings) -> list[float]:
    """The sparsities to fall back to when pruning loses too much: 10 points at a time, down to `min_sparsity`."""
    if settings.min_sparsity is None or settings.sparsity <= settings.min_sparsity:
        return []
    steps = int(np.ceil(round((settings.sparsity - settings.min_sparsity) / 0.1, 6)))
    return [round(max(settings.min_sparsity, settings.sparsity - 0.1 * i), 4) for i in range(1, steps + 1)]
