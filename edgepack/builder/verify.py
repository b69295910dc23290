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


class OutputStats:
    """Running statistics of one output, reference against candidate, fed batch by batch.

    What is kept is float64 scalars (sums, sums of squares, extremes, agreement counts) and a few
    numbers per sample (its norms and largest error, for the per-sample cosine), never the outputs:
    memory does not grow with the output's size or the number of batches."""

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None  # one sample's shape
        self.count = 0  # elements seen
        self.mean = 0.0  # of the reference, with M2 merged per batch (Chan et al.), for its variance
        self.m2 = 0.0
        self.err_sq = self.err_sum = self.err_max = 0.0
        self.ref_min, self.ref_max, self.abs_max = np.inf, -np.inf, 0.0
        self.within = self.within_err = 0.0  # sums of squares around each sample's own mean
        self.dots: list[float] = []  # per sample: centred dot product, norms, largest error
        self.ref_norms: list[float] = []
        self.cand_norms: list[float] = []
        self.sample_err_max: list[float] = []
        self.finite = True
        self.probabilities = True  # every 2-D reference row non-negative and summing to 1
        self.agree = self.positions = 0  # argmax over the last axis agreeing
        self.ref_top: list[np.ndarray] = []  # 2-D outputs: each sample's top class, for accuracy
        self.cand_top: list[np.ndarray] = []

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Fold one batch of reference and candidate outputs into the statistics."""
        self.shape = tuple(reference.shape[1:])
        n = len(reference)
        if n == 0:
            return
        if not np.isfinite(candidate).all():
            self.finite = False
        if reference.ndim == 2:
            rows = reference.sum(axis=1)
            self.probabilities &= bool(np.all(reference >= 0) and np.allclose(rows, 1, atol=1e-3))
            self.ref_top.append(reference.argmax(1))
            self.cand_top.append(candidate.argmax(1))
        if reference.ndim >= 2 and reference.shape[-1] > 1:
            self.agree += int(np.sum(reference.argmax(-1) == candidate.argmax(-1)))
            self.positions += int(np.prod(reference.shape[:-1]))
        ref = reference.astype(np.float64).reshape(n, -1)
        cand = candidate.astype(np.float64).reshape(n, -1)
        err = np.abs(ref - cand)
        size = ref.size
        batch_mean = float(ref.mean())
        batch_m2 = float(np.sum((ref - batch_mean) ** 2))
        total = self.count + size
        delta = batch_mean - self.mean
        self.m2 += batch_m2 + delta**2 * self.count * size / total
        self.mean += delta * size / total
        self.count = total
        self.err_sq += float(np.sum(err**2))
        self.err_sum += float(err.sum())
        self.err_max = max(self.err_max, float(err.max())) if np.isfinite(err).all() else float("inf")
        self.ref_min, self.ref_max = min(self.ref_min, float(ref.min())), max(self.ref_max, float(ref.max()))
        self.abs_max = max(self.abs_max, float(np.abs(ref).max()))
        if ref.shape[1] > 1:
            ref = ref - ref.mean(axis=1, keepdims=True)
            cand = cand - cand.mean(axis=1, keepdims=True)
            self.within += float(np.sum(ref**2))
            self.within_err += float(np.sum((ref - cand) ** 2))
        self.dots += np.sum(ref * cand, axis=1).tolist()
        self.ref_norms += np.linalg.norm(ref, axis=1).tolist()
        self.cand_norms += np.linalg.norm(cand, axis=1).tolist()
        self.sample_err_max += err.max(axis=1).tolist()

    def kind(self, labels_fit: bool = False) -> OutputKind:
        """Infer the output's kind as `output_kind` does, from the statistics."""
        if self.shape is None or len(self.shape) != 1 or self.shape[0] < 2:
            return OutputKind.dense
        return OutputKind.classes if self.probabilities or labels_fit else OutputKind.dense

    def fidelity(self, name: str, kind: OutputKind) -> OutputFidelity:
        """The output's fidelity, as `output_fidelity` measures it on all samples at once."""
        scale = self.abs_max or 1.0
        count = max(self.count, 1)
        sqnr = _sqnr(self.m2 / count, self.err_sq / count, scale)
        width = int(np.prod(self.shape)) if self.shape else 1
        if width > 1 and self.within / count > (1e-6 * scale) ** 2:
            sqnr = min(sqnr, _sqnr(self.within / count, self.within_err / count, scale))
        ref_norms, cand_norms = np.asarray(self.ref_norms), np.asarray(self.cand_norms)
        norms = ref_norms * cand_norms
        flat = ref_norms <= 1e-6 * scale * np.sqrt(width)
        close = np.asarray(self.sample_err_max) <= 1e-3 * scale
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(flat, close.astype(np.float64), np.asarray(self.dots) / np.where(norms > 0, norms, 1))
        span = (self.ref_max - self.ref_min) or scale
        out = OutputFidelity(
            name=name,
            kind=kind.value,
            sqnr_db=sqnr,
            cosine=float(np.mean(cos)) if len(cos) and np.isfinite(cos).all() else 0.0,
            max_rel_error=self.err_max / span if np.isfinite(self.err_max) else float("inf"),
            mean_rel_error=self.err_sum / count / span,
        )
        if kind is OutputKind.classes:  # at every position: the class axis is the last
            out.top1_agreement = self.agree / max(self.positions, 1)
        return out


def output_fidelity(name: str, kind: OutputKind, reference: np.ndarray, candidate: np.ndarray) -> OutputFidelity:
    """Measure how far CANDIDATE is from REFERENCE (one output, all samples).

    SQNR is the worse of two: against the output's variation over all samples, and against each
    sample's variation around its own mean (so a per-sample offset, as in depth maps, cannot hide
    a flat answer). Cosine is per sample, on values centred per sample where a sample has more
    than one; a sample whose reference does not vary agrees when its error is within 0.1% of the
    output's scale.
    """
    stats = OutputStats()
    stats.add(reference, candidate)
    return stats.fidelity(name, kind)


# Inputs per verification batch: a batch's activations in the original model are what a
# verification holds at once, and they grow with the input (a 640x640 image: one sample a batch).
BATCH_INPUT_BYTES = 8 * 2**20
MAX_BATCH = 64


def batch_size(xs: list[np.ndarray]) -> int:
    """How many samples to run at once: about BATCH_INPUT_BYTES of input, at least one."""
    per_sample = sum(x[:1].nbytes for x in xs) or 1
    return int(max(1, min(MAX_BATCH, BATCH_INPUT_BYTES // per_sample)))


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
    stats = [OutputStats() for _ in reference]
    for s, r, c in zip(stats, reference, candidate):
        s.add(r, c)
    metric = None
    if settings is not None and settings.metric:
        metric = user_metric(settings.metric)(reference, candidate, labels)
    return judge(stats, labels, max_accuracy_drop, names, settings, metric)


def judge(
    stats: list[OutputStats],
    labels: np.ndarray | None,
    max_accuracy_drop: float,
    names: list[str] | None = None,
    settings: Verify | None = None,
    metric: float | None = None,
) -> Fidelity:
    """Turn each output's statistics into the fidelity report and the gate's verdict; the worst output decides.

    Raises:
        DataError: the labels name classes the model's first output does not have.
        ProfileError: `verify.outputs` names an output the model does not have, or declares one
            that cannot hold class scores as classes.
    """
    settings = settings or Verify()
    names = names or [f"output_{i}" for i in range(len(stats))]
    counted = sum(s.count for s in stats)
    f = Fidelity(
        n_samples=len(stats[0].ref_norms),
        max_abs_error=float(max(s.err_max for s in stats)),
        mean_abs_error=float(sum(s.err_sum for s in stats) / counted) if counted else 0.0,
    )
    unknown = sorted(set(settings.outputs) - set(names))
    if unknown:
        raise ProfileError(f"verify.outputs names {', '.join(unknown)}, which the model does not have", hint=f"its outputs: {', '.join(names)}")
    for name, s in zip(names, stats):
        if settings.outputs.get(name) == OutputKind.classes and (not s.shape or s.shape[-1] < 2):
            raise ProfileError(f"verify.outputs: {name} has shape {s.shape}, not class scores", hint=f"declare it dense: verify: {{outputs: {{{name}: dense}}}}")
    # Labels belong to the first output that can hold them (2-D class scores).
    labelled = next((i for i, s in enumerate(stats) if s.shape is not None and len(s.shape) == 1 and s.shape[0] > 1 and settings.outputs.get(names[i]) != OutputKind.dense), None)
    if labels is not None and labelled is not None and len(labels) and labels.max() >= stats[labelled].shape[0]:
        width = stats[labelled].shape[0]
        raise DataError(
            f"labels y include class {int(labels.max())}, but the model answers {width} classes (0..{width - 1})",
            hint="check that the labels belong to this model (and are numbered from 0)",
        )
    broken = [i for i, s in enumerate(stats) if not s.finite]
    if broken:  # an overflow (fp16) or a broken kernel: no figure below means anything
        f.failures.append(f"the artifact answers NaN or infinite values ({', '.join(names[i] for i in broken)}): it does not work")
    kinds = [
        OutputKind(settings.outputs[n]) if n in settings.outputs else s.kind(labels_fit=labels is not None and i == labelled)
        for i, (n, s) in enumerate(zip(names, stats))
    ]
    f.outputs = [s.fidelity(n, k) for n, k, s in zip(names, kinds, stats)]
    for i in broken:
        f.outputs[i].passed = False
    first_classes = next((o for o in f.outputs if o.kind == OutputKind.classes.value), None)
    if first_classes is not None:
        f.top1_agreement = first_classes.top1_agreement
    if labels is not None and labels.ndim == 1 and labelled is not None and kinds[labelled] is OutputKind.classes:
        ref, cand = np.concatenate(stats[labelled].ref_top), np.concatenate(stats[labelled].cand_top)
        f.accuracy_original = float(np.mean(ref == labels))
        f.accuracy_artifact = float(np.mean(cand == labels))
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
    if metric is not None:
        f.metric = metric
        low, high = settings.metric_min, settings.metric_max
        if (low is not None and metric < low) or (high is not None and metric > high):
            bound = f"at least {low:g}" if low is not None else f"at most {high:g}"
            f.failures.append(f"verify.metric {settings.metric} is {metric:.4g}, budget {bound}")
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
    """Run ORIGINAL and ARTIFACT on EVALUATION batch by batch and compare them, output by output.

    Each batch's outputs are folded into running statistics and let go, so memory stays that of
    one batch however many samples there are. A task metric (`verify.metric`) is the exception:
    it is a function of all the outputs, so they are kept for it (the outputs, never activations).
    """
    names = [s.name for s in original.outputs]
    input_names = [s.name for s in original.inputs]
    stats = [OutputStats() for _ in names]
    keep = bool(profile.verify.metric)
    kept: tuple[list, list] = ([[] for _ in names], [[] for _ in names])
    step = batch_size(evaluation.x)
    for start in range(0, len(evaluation), step):
        batch = [x[start : start + step] for x in evaluation.x]
        reference = original.predict(batch, batch_size=step)
        candidate = artifact.predict(batch, input_names, names)
        for k, (s, r, c) in enumerate(zip(stats, reference, candidate)):
            s.add(r, c)
            if keep:
                kept[0][k].append(r)
                kept[1][k].append(c)
        del reference, candidate, batch
    metric = None
    if keep:
        metric = user_metric(profile.verify.metric)([np.concatenate(r) for r in kept[0]], [np.concatenate(c) for c in kept[1]], evaluation.y)
    return judge(stats, evaluation.y, profile.budgets.max_accuracy_drop, names, profile.verify, metric)
