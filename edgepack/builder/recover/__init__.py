"""Explain where quantization hurts a model, and recover from it automatically.

After a quantized build, `explain` measures the error each layer adds. When the fidelity gate
fails, or the quantizer raises, and the profile says `build.fallback: auto`, `recover` tries
variants in order of cost — another way to quantize the weights, then keeping the most sensitive
layers in float, added one by one by measured sensitivity — and keeps the first that meets every
budget; then the precision ladder climbs (fp16, fp32) where the profile allows. Each attempt is
recorded, so a user sees what was tried, what it scored and what it cost.

`engine` orchestrates (the build's convert, verify and recover stages); `common` holds what every
format shares (attempts, outcomes, the ladder). Each format's explanation and recovery live in one
module with one signature, chosen from `RECOVERIES` as the exporters are chosen from `EXPORTERS`:

    explain(model, profile, calibration, sample, artifact) -> list[LayerError]
    recover(model, profile, calibration, evaluation, check, outcome) -> None
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgepack.profile.schema import Format

RECOVERIES: dict[Format, str] = {
    Format.tflite: "edgepack.builder.recover.tflite",
    Format.onnx: "edgepack.builder.recover.onnx",
}


def recovery(fmt: Format) -> ModuleType | None:
    """Return the module that explains and recovers FMT's builds (None: the format has none)."""
    return importlib.import_module(RECOVERIES[fmt]) if fmt in RECOVERIES else None
