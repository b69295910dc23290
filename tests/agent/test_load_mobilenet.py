"""Load time and memory on a real-size model: MobileNetV2 (3.5 M parameters, random weights), built by the real pipeline."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.agent.test_agent import run_agent

pytestmark = pytest.mark.slow

# An app as small as it gets: import the runtime, load, 60 inferences; the peak over the RSS after the import.
MINIMAL_APP = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter

def kb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

baseline = kb("VmRSS")
it = Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2]))
it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
for _ in range(60):
    it.invoke()
print((kb("VmHWM") - baseline) / 1024.0)
"""


@pytest.fixture(scope="module")
def mobilenet_bundles(tmp_path_factory):
    """{"tflite-int8": ..., "onnx": ...}: MobileNetV2 (224x224, weights=None: nothing to download), each in a workdir of its own."""
    import keras

    from edgepack.builder.pipeline import build
    from edgepack.profile.store import Catalog, SearchDir, builtin_dir

    root = tmp_path_factory.mktemp("mobilenet")
    keras.utils.set_random_seed(0)
    keras.applications.MobileNetV2(weights=None).save(root / "mobilenet_v2.keras")
    rng = np.random.default_rng(0)
    np.savez(root / "images.npz", x=rng.uniform(-1, 1, size=(24, 224, 224, 3)).astype("float32"))
    targets = root / "targets"
    targets.mkdir()
    # Random weights answer near-uniformly: the gate is not what these tests are about.
    lenient = "budgets: {max_accuracy_drop: 1.0}\nverify: {min_sqnr_db: -100, min_cosine: -1}\n"
    (targets / "pi-int8.yaml").write_text("extends: raspberry-pi-4\nbuild: {calibration_samples: 16}\n" + lenient)
    (targets / "pi-onnx.yaml").write_text("extends: raspberry-pi-5-onnx\nbuild: {precision: fp32}\n" + lenient)
    catalog = Catalog([SearchDir("project", targets), SearchDir("builtin", builtin_dir())])
    return {
        kind: build(root / "mobilenet_v2.keras", target, data=root / "images.npz", out=root / kind / "bundle", use_cache=False, catalog=catalog).bundle
        for kind, target in (("tflite-int8", "pi-int8"), ("onnx", "pi-onnx"))
    }


def test_agent_memory_is_the_models_own_within_10_percent_of_a_minimal_app(mobilenet_bundles):
    bundle = mobilenet_bundles["tflite-int8"]
    threads = "4"

    proc, report = run_agent(bundle, "--threads", threads, "--runs", "60", "--warmup", "0", "--cold-loads", "0", "--load-cache", "off")
    app = subprocess.run([sys.executable, "-c", MINIMAL_APP, str(bundle / "model.tflite"), threads],
                         capture_output=True, text=True, timeout=300, check=True)
    independent = float(app.stdout.strip().splitlines()[-1])

    assert proc.returncode == 0, report.errors
    memory = report.memory
    assert memory.peak_reset is True and "clear_refs" in memory.method and "before the reference check" in memory.method
    assert abs(memory.delta_mb - independent) <= 0.10 * independent, (memory.delta_mb, independent)
    assert 0 < memory.load_mb <= memory.delta_mb and memory.inference_mb >= 0
    assert memory.check_peak_rss_mb is not None  # the check's own peak, reported apart


def test_onnx_optimised_graph_of_a_real_size_model_is_made_timed_and_answers_like_plain(mobilenet_bundles, tmp_path):
    # How much faster it loads is scripts/bench_load.py's to measure (3.5x warm here); this holds
    # what the figure rests on: the form is made on the device, every load of it timed, its answers checked.
    bundle = tmp_path / "device" / "bundle"
    shutil.copytree(mobilenet_bundles["onnx"], bundle)

    proc, report = run_agent(bundle, "--cold-loads", "3", "--runs", "5", "--warmup", "1")

    assert proc.returncode == 0, report.errors
    opt = report.load.optimized
    assert opt.form in ("onnx-optimized", "ort-format") and len(opt.warm_ms) == len(report.load.warm_ms) >= 3
    assert all(ms > 0 for ms in [*opt.cold_ms, *opt.warm_ms])
    assert opt.check.max_abs_error <= report.check.max_abs_error + 1e-5 and opt.check.top1_agreement == report.check.top1_agreement
