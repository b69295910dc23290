#!/usr/bin/env python
"""Benchmark what per-operator profiling costs on this machine, and show what it finds.

Two ONNX (fp32) models on ONNX Runtime's CPU provider: the digits CNN (trained in seconds on
scikit-learn's digits) and MobileNetV2 (keras.applications.MobileNetV2(weights=None), 224x224x3,
nothing downloaded), each built by edgepack for the raspberry-pi-5-onnx target. For each:

  - p50 latency of a plain session and of a session with enable_profiling, N runs each
    (the profiler's overhead per inference);
  - the seconds the agent's operator step takes (a profiling session made, 1 + 20 runs, the JSON read);
  - the top op types the profile finds, and how much of the run time the kernels account for.

Usage:
    .venv/bin/python scripts/bench_op_profile.py [--runs N] [--threads N] [--workdir DIR]

The models and bundles are kept in --workdir (default .cache/bench-op-profile): a second run only measures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

LENIENT = "budgets: {max_accuracy_drop: 1.0, max_p90_latency_ms: 100000}\nverify: {min_sqnr_db: -100, min_cosine: -1}\n"


def make_bundles(workdir: Path) -> dict[str, Path]:
    """Build the digits CNN and MobileNetV2 as ONNX fp32 bundles (once, kept in WORKDIR)."""
    from edgepack.builder.pipeline import build
    from edgepack.examples import write_example
    from edgepack.profile.store import Catalog, SearchDir, builtin_dir

    workdir.mkdir(parents=True, exist_ok=True)
    targets = workdir / "targets"
    targets.mkdir(exist_ok=True)
    (targets / "profile-onnx.yaml").write_text("extends: raspberry-pi-5-onnx\nbuild: {precision: fp32}\n" + LENIENT)
    catalog = Catalog([SearchDir("project", targets), SearchDir("builtin", builtin_dir())])
    digits_model, digits_data = write_example(workdir / "digits")
    mobilenet = workdir / "mobilenet_v2.keras"
    if not mobilenet.exists():
        import keras

        keras.utils.set_random_seed(0)
        keras.applications.MobileNetV2(weights=None).save(mobilenet)
    images = workdir / "images.npz"
    if not images.exists():
        np.savez(images, x=np.random.default_rng(0).uniform(-1, 1, size=(16, 224, 224, 3)).astype("float32"))
    bundles = {}
    for name, model, data in (("digits-cnn", digits_model, digits_data), ("mobilenet-v2", mobilenet, images)):
        out = workdir / f"{name}-onnx"
        if not (out / "manifest.json").exists():
            build(model, "profile-onnx", data=data, out=out, catalog=catalog)
        bundles[name] = out
    return bundles


def p50(session, feed, runs: int) -> float:
    for _ in range(5):
        session.run(None, feed)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return float(np.median(samples))


def measure(bundle: Path, runs: int, threads: int) -> dict:
    import onnxruntime as ort

    from edgepack.ondevice.opprofile import profile_ort_session

    model = str(bundle / "model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    plain = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    spec = plain.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in spec.shape]
    feed = {spec.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        profiled_options = ort.SessionOptions()
        profiled_options.intra_op_num_threads = threads
        profiled_options.enable_profiling = True
        profiled_options.profile_file_prefix = os.path.join(tmp, "overhead")
        profiled = ort.InferenceSession(model, profiled_options, providers=["CPUExecutionProvider"])
        figures = {"plain_p50_ms": p50(plain, feed, runs), "profiled_p50_ms": p50(profiled, feed, runs)}
        os.remove(profiled.end_profiling())

        def make_session(prefix):
            o = ort.SessionOptions()
            o.intra_op_num_threads = threads
            o.enable_profiling = True
            o.profile_file_prefix = prefix
            return ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])

        t0 = time.perf_counter()
        found = profile_ort_session(make_session, feed, None, tmp)
        figures["operator_step_s"] = time.perf_counter() - t0
    figures["profile"] = found
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "bench-op-profile")
    args = parser.parse_args()
    bundles = make_bundles(args.workdir)
    for name, bundle in bundles.items():
        f = measure(bundle, args.runs, args.threads)
        prof = f["profile"]
        overhead = 100 * (f["profiled_p50_ms"] / f["plain_p50_ms"] - 1)
        print(f"{name}: p50 plain {f['plain_p50_ms']:.3f} ms, with the profiler {f['profiled_p50_ms']:.3f} ms ({overhead:+.1f}%); "
              f"operator step {f['operator_step_s']:.2f} s; {len(prof['nodes'])} nodes, kernels {prof['total_ms']:.3f} ms per run "
              f"({100 * prof['total_ms'] / f['profiled_p50_ms']:.0f}% of the profiled p50)")
        for g in prof["by_op_type"][:5]:
            print(f"    {g['op_type']:<24} x{g['count']:<3} {g['ms']:.3f} ms  {100 * g['share']:.1f}%")
    print(f"threads {args.threads}, {args.runs} runs per p50, onnxruntime CPUExecutionProvider")
    return 0


if __name__ == "__main__":
    sys.exit(main())
