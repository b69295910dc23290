"""Entropy and percentile calibration of ONNX int8 builds: the ranges onnxruntime's own calibrators
compute with every activation of every sample in memory, computed a batch at a time instead."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.onnx_detectors import blob_images, detector


def ort_ranges(model, method, batches):
    """onnxruntime's calibration as quantize_static runs it: every batch collected, then the histograms."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(batches)

        def get_next(self):
            return next(self.feeds, None)

    ops = list(set(QLinearOpsRegistry) | set(QDQRegistry))
    calibrator = create_calibrator(model, ops, augmented_model_path=str(model.parent / "ort-augmented.onnx"), calibrate_method=method)
    calibrator.collect_data(Reader())
    return calibrator.compute_data()


@pytest.mark.parametrize("method", ["Percentile", "Entropy"])
def test_histogram_calibration_a_batch_at_a_time_gives_onnxruntimes_ranges(tmp_path, method):
    from onnxruntime.quantization import CalibrationMethod

    from edgepack.builder.convert.onnx_calibration import histogram_ranges
    from edgepack.builder.convert.onnx_quant import int8_input

    pre, _ = int8_input(detector(0.15), per_channel=True)
    model = tmp_path / "pre.onnx"
    model.write_bytes(pre.SerializeToString())
    x = blob_images(6, 32)
    # Later batches reach past the first one's range: the histograms' bins must not be the first batch's.
    x[3:] *= 3.0
    name = pre.graph.input[0].name
    batches = [{name: x[i : i + 2]} for i in range(0, len(x), 2)]

    ours = histogram_ranges(model, CalibrationMethod[method], lambda: iter(batches), tmp_path / "augmented.onnx")
    theirs = ort_ranges(model, CalibrationMethod[method], batches)

    assert ours.calibration_method == theirs.calibration_method
    assert set(ours.keys()) == set(theirs.keys()) and len(theirs.keys()) > 10
    for tensor in theirs.keys():
        assert np.array_equal(ours[tensor].range_value, theirs[tensor].range_value), tensor


PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from edgepack.builder.convert.onnx_quant import quantize_int8
    from edgepack.builder.memory import peak_rss_mb
    from edgepack.builder.streaming import compare_graphs
    from edgepack.model.data import Dataset
    from edgepack.profile.schema import CalibrationMethod
    from edgepack.profile.store import Catalog
    from tests.onnx_detectors import blob_images, detector

    size, n, method = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    profile = Catalog().load("raspberry-pi-5-onnx").profile
    onnx_options = profile.build.onnx.model_copy(update={"calibration_method": CalibrationMethod(method)})
    profile = profile.model_copy(update={"build": profile.build.model_copy(update={"onnx": onnx_options})})
    fp32 = detector(0.25)
    data = Dataset([blob_images(n, size)])
    quantize_int8(fp32, profile, data.take(np.arange(2)))  # sessions and imports: what any run costs
    base = peak_rss_mb()
    model, facts = quantize_int8(fp32, profile, data)
    assert facts["calibration_method"] == method
    # every float activation of every sample, in float32 (what collecting them would hold)
    probe = compare_graphs(fp32, fp32, data.take(np.arange(1)))
    collected = n * sum(s.count for s in probe.values()) * 4 / 2**20
    print(peak_rss_mb() - base, collected)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_stays_far_below_collecting_every_activation(isolated_user_dirs, tmp_path, method):
    script = tmp_path / "peak.py"
    script.write_text(PEAK_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, str(script), "192", "96", method], capture_output=True, text=True, env=env, timeout=600, check=True)

    growth_mb, collected_mb = map(float, out.stdout.split()[-2:])
    print(f"peak growth {growth_mb:.0f} MB; every activation {collected_mb:.0f} MB")
    assert collected_mb > 600  # large enough that holding every activation would show
    assert growth_mb < collected_mb / 5
