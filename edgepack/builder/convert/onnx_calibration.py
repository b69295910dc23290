"""onnxruntime's histogram calibration (entropy, percentile) in bounded memory.

onnxruntime's `HistogramCalibrater.collect_data` keeps every calibrated tensor of every calibration
batch before it builds one histogram per tensor: for an image model that is every activation of
every sample (about 4.5 GB for PP-OCR's text detector on 24 samples at 320x320). Fed a batch at a
time instead (its `CalibStridedMinMax` option), the first batch fixes each histogram's bins and the
result changes with the order of the data.

Here the calibration runs the same augmented graph over the data twice, one batch at a time: the
first pass finds each tensor's range, the second adds each batch to a histogram over that range.
A histogram's counts are a sum over values once its bins are fixed, so the histograms, and the
thresholds onnxruntime's own `HistogramCollector` computes from them, are those of the
all-at-once calibration. Memory is one batch's tensors and a histogram per tensor, whatever the
number of samples. `quantize_static` then reads the ranges from a calibration cache file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np


def histogram_ranges(model: Path, method, feeds: Callable[[], Iterable[dict]], augmented: Path):
    """Calibrate MODEL (a file) with onnxruntime's entropy or percentile METHOD (an
    `onnxruntime.quantization.CalibrationMethod`) on the batches that FEEDS yields (input name ->
    array; called once per pass); AUGMENTED is where the graph with every calibrated tensor as an
    output is written. Returns onnxruntime's `TensorsData`, as `quantize_static` would compute it."""
    from onnxruntime.quantization.calibrate import HistogramCollector, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    # The op types and defaults that quantize_static calibrates with when given none.
    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    calibrator = create_calibrator(model, ops, augmented_model_path=str(augmented), calibrate_method=method)
    session = calibrator.infer_session
    names = [o.name for o in session.get_outputs()]
    wanted = [n for n in names if n in calibrator.tensors_to_calibrate]
    absolute = calibrator.method == "percentile" and calibrator.symmetric  # HistogramCollector.collect's choice

    def outputs():
        for feed in feeds():
            yield dict(zip(names, session.run(None, feed)))

    lowest: dict[str, np.ndarray] = {}
    highest: dict[str, np.ndarray] = {}
    nearest: dict[str, np.ndarray] = {}  # the smallest magnitude, where histograms are of magnitudes
    for found in outputs():
        for name in wanted:
            value = found[name]
            lo, hi = np.nanmin(value), np.nanmax(value)
            lowest[name] = lo if name not in lowest else min(lowest[name], lo)
            highest[name] = hi if name not in highest else max(highest[name], hi)
            if absolute:
                near = np.abs(value).min()
                nearest[name] = near if name not in nearest else min(nearest[name], near)
        del found
    if not lowest:
        raise ValueError("No data is collected.")

    bins = calibrator.num_bins
    histograms: dict[str, tuple] = {}
    for found in outputs():
        for name in wanted:
            value = found[name].ravel()
            lo, hi = lowest[name], highest[name]
            if absolute:
                counts, edges = np.histogram(np.abs(value), bins=bins, range=(nearest[name], np.maximum(np.abs(lo), np.abs(hi))))
                edges = edges.astype(value.dtype)
            else:
                threshold = np.array(max(abs(lo), abs(hi)), dtype=value.dtype)
                counts, edges = np.histogram(value, bins, range=(-threshold, threshold))
            if name in histograms:
                counts = counts + histograms[name][0]
            histograms[name] = (counts, edges, lo, hi) if absolute else (counts, edges, lo, hi, threshold)
        del found

    collector = HistogramCollector(
        method=calibrator.method, symmetric=calibrator.symmetric, num_bins=bins,
        num_quantized_bins=calibrator.num_quantized_bins, percentile=calibrator.percentile, scenario=calibrator.scenario,
    )
    collector.histogram_dict = histograms
    calibrator.collector = collector
    ranges = calibrator.compute_data()
    return ranges
