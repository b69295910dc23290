"""Check that an artifact still answers like the original model, and that it meets the budgets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from edgepack.bundle import TensorSpec
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import Budgets


@dataclass
class Fidelity:
    n_samples: int
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: Optional[float] = None  # None where the first output is not a class score
    accuracy_original: Optional[float] = None  # where labels exist
    accuracy_artifact: Optional[float] = None
    accuracy_drop: Optional[float] = None
    passed: bool = True
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class TfliteRunner:
    """Run a .tflite model on the host with ai-edge-litert, one sample at a time, float in and out."""

    def __init__(self, content: bytes):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=content)
        self.runner = self.interpreter.get_signature_runner()
        self.input_details = self.runner.get_input_details()
        self.output_details = self.runner.get_output_details()

    def specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Return the artifact's input and output specs, with quantization where it applies."""

        def spec(name: str, d: dict) -> TensorSpec:
            scale, zero = d["quantization"]
            quantized = scale != 0.0
            return TensorSpec(
                name=name, shape=[int(s) for s in d["shape"]], dtype=np.dtype(d["dtype"]).name,
                scale=float(scale) if quantized else None, zero_point=int(zero) if quantized else None,
            )

        return ([spec(n, d) for n, d in self.input_details.items()], [spec(n, d) for n, d in self.output_details.items()])

    def predict(self, xs: list[np.ndarray], input_names: list[str], output_names: list[str]) -> list[np.ndarray]:
        if len(input_names) == 1 and len(self.input_details) == 1:
            input_names = list(self.input_details)  # one input: its name does not matter
        outputs: list[list[np.ndarray]] = [[] for _ in output_names]
        for i in range(len(xs[0])):
            feed = {name: _quantize(x[i : i + 1], self.input_details[name]) for name, x in zip(input_names, xs)}
            result = self.runner(**feed)
            for k, name in enumerate(output_names):
                outputs[k].append(_dequantize(result[name], self.output_details[name]))
        return [np.concatenate(o) for o in outputs]


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.issubdtype(np.dtype(detail["dtype"]), np.floating):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def compare(
    reference: list[np.ndarray], candidate: list[np.ndarray], labels: np.ndarray | None, max_accuracy_drop: float
) -> Fidelity:
    """Compare the artifact's outputs with the original's; the first output decides top-1 and accuracy."""
    errors = [np.abs(r.astype(np.float64) - c.astype(np.float64)) for r, c in zip(reference, candidate)]
    f = Fidelity(
        n_samples=len(reference[0]),
        max_abs_error=float(max(e.max() for e in errors)),
        mean_abs_error=float(np.mean(np.concatenate([e.ravel() for e in errors]))),
    )
    ref, cand = reference[0], candidate[0]
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
    f.passed = not f.failures
    return f


def check_size(size_bytes: int, budgets: Budgets) -> list[str]:
    """Return the size-budget failure, if any."""
    kb = size_bytes / 1024
    if budgets.max_model_kb is not None and kb > budgets.max_model_kb:
        return [f"model is {kb:.1f} KB, budget {budgets.max_model_kb:.0f} KB: missed by {kb - budgets.max_model_kb:.1f} KB"]
    return []


def verify_tflite(original: SourceModel, content: bytes, evaluation: Dataset, max_accuracy_drop: float) -> Fidelity:
    """Run ORIGINAL and the .tflite CONTENT on EVALUATION and compare them."""
    runner = TfliteRunner(content)
    reference = original.predict(evaluation.x)
    candidate = runner.predict(evaluation.x, [s.name for s in original.inputs], [s.name for s in original.outputs])
    return compare(reference, candidate, evaluation.y, max_accuracy_drop)
