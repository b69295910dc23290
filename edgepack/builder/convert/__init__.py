"""One export function per output format, all with one signature:

    export(model: SourceModel, profile: Profile, calibration: Dataset | None) -> Artifact

`EXPORTERS` maps each format this edgepack builds to its function (imported lazily: the
converters pull in TensorFlow, tf2onnx or onnxruntime).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgepack.bundle import TensorSpec
from edgepack.model.tflite_runner import dequantize, quantize  # noqa: F401  (the exporters' (de)quantization)
from edgepack.profile.schema import Format

EXPORTERS: dict[Format, str] = {
    Format.tflite: "edgepack.builder.convert.tflite:export_tflite",
    Format.onnx: "edgepack.builder.convert.onnx:export_onnx",
    Format.tflite_micro: "edgepack.builder.convert.micro:export_micro",
}


@dataclass
class Artifact:
    """What an exporter made: the bundle files and a way to run the artifact on the host."""

    files: dict[str, bytes]  # bundle file name -> content
    artifact: str  # the file the runtime loads
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # Runs the artifact on the host: float inputs (one array per input, batch first), the
    # source model's input and output names -> float outputs in the source model's order.
    predict: Callable[[list[np.ndarray], list[str], list[str]], list[np.ndarray]]
    facts: dict[str, Any] = field(default_factory=dict)  # format-specific facts for the manifest
    failures: list[str] = field(default_factory=list)  # format-specific budget misses (e.g. does not fit)

    @property
    def size_bytes(self) -> int:
        return len(self.files[self.artifact])


def exporter(fmt: Format) -> Callable:
    """Return the export function for FMT."""
    module, name = EXPORTERS[fmt].split(":")
    return getattr(importlib.import_module(module), name)
