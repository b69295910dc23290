#!/usr/bin/env python
"""Benchmark edgepack's ONNX precisions on this machine: size, batch-1 latency and accuracy.

Two real models, trained here on scikit-learn's digits (no downloads):
  - digits-cnn:   edgepack.examples.digits_cnn (8x8x1 input, 38 k parameters);
  - mobilenetv2:  keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10),
                  trained briefly on the digits upscaled to 96x96x3 (2.3 M parameters).
Each is exported to ONNX and lowered by edgepack (fp32, fp16, int8 QDQ, dynamic-int8), side by
side with what a user would otherwise do: onnxruntime's `quantize_dynamic` with its defaults.
Latency: onnxruntime, one sample per run, warm-up runs apart from timed runs, the variants timed
round-robin (a noisy machine hurts them alike), at 1 thread and at all cores; percentiles with
numpy over every sample. Accuracy: on the 597 held-out digits.

Usage:
    .venv/bin/python scripts/bench_onnx.py [--quick] [--providers CUDAExecutionProvider,...] [--workdir DIR]

--quick trains less and times fewer runs (a few minutes the first time); the trained models are cached in
--workdir (default .cache/bench-onnx) so a second run only measures.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def train_models(workdir: Path, quick: bool) -> dict[str, Path]:
    """Train (once, cached in WORKDIR) the digits CNN and MobileNetV2; return name -> .keras path."""
    import keras

    from edgepack.examples import digits_cnn, digits_data

    x, y = digits_data()
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {"digits-cnn": workdir / "digits_cnn.keras", "mobilenetv2": workdir / f"mobilenetv2{'-quick' if quick else ''}.keras"}
    if not paths["digits-cnn"].exists():
        digits_cnn(x[:1200], y[:1200], epochs=12).save(paths["digits-cnn"])
    if not paths["mobilenetv2"].exists():
        big = upscale(x)
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
        for layer in model.layers:  # few steps: moving statistics must catch up with the weights
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(big[:1200], y[:1200], epochs=2 if quick else 4, batch_size=32, verbose=0)
        model.save(paths["mobilenetv2"])
    return paths


def upscale(x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    return tf.image.resize(np.repeat(x, 3, axis=-1), (96, 96)).numpy().astype(np.float32)


def time_variants(contents: dict[str, bytes], sample: list[np.ndarray], providers: list[str], threads: int,
                  rounds: int, per_round: int, warmup: int) -> dict[str, tuple[float, float, list[str]] | str]:
    """Time one-sample runs of every model in CONTENTS, round-robin so that a noisy machine hurts
    them all alike. Returns label -> (p50 ms, p90 ms, providers used), or the reason it cannot run."""
    import onnxruntime as ort

    from edgepack.model.onnx_graph import ORT_DTYPES

    sessions, results = {}, {}
    for label, content in contents.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(content, sess_options=options, providers=providers)
            feed = {node.name: x.astype(ORT_DTYPES[node.type]) for node, x in zip(session.get_inputs(), sample)}
            for _ in range(warmup):
                session.run(None, feed)
        except Exception as exc:
            reason = " ".join(str(exc).split())
            results[label] = reason[reason.find("Could not find"):] if "Could not find" in reason else reason[:90]
            continue
        sessions[label] = (session, feed)
    samples: dict[str, list[float]] = {label: [] for label in sessions}
    for _ in range(rounds):
        for label, (session, feed) in sessions.items():
            for _ in range(per_round):
                t0 = time.perf_counter_ns()
                session.run(None, feed)
                samples[label].append((time.perf_counter_ns() - t0) / 1e6)
    for label, (session, _) in sessions.items():
        p50, p90 = np.percentile(samples[label], [50, 90])
        results[label] = (float(p50), float(p90), session.get_providers())
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="train less, time fewer runs")
    parser.add_argument("--providers", default="CPUExecutionProvider", help="onnxruntime providers for the timings, in order")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "bench-onnx")
    args = parser.parse_args()
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]

    from edgepack.quiet import quiet

    with quiet():
        import onnxruntime as ort
        from onnxruntime.quantization import quantize_dynamic

        from edgepack.builder.convert.onnx import export_onnx
        from edgepack.examples import digits_data
        from edgepack.model.data import Dataset
        from edgepack.model.source import load_model
        from edgepack.profile.schema import Precision
        from edgepack.profile.store import Catalog

        x, y = digits_data()
        paths = train_models(args.workdir, args.quick)
    base = Catalog().load("raspberry-pi-5-onnx").profile  # ONNX Runtime, CPU provider
    rounds, per_round, warmup = (4, 25, 10) if args.quick else (10, 50, 30)
    cores = os.cpu_count() or 1
    thread_counts = sorted({1, cores})
    print(f"# {cpu_model()}, {cores} cores; onnxruntime {ort.__version__}; providers {providers}")
    print(f"# latency: batch 1, {warmup} warm-up runs, then {rounds} rounds of {per_round} runs per variant, round-robin; "
          f"p50 at {' and '.join(f'{t} thread' + ('s' if t > 1 else '') for t in thread_counts)}, p90 at {cores}; "
          "accuracy on the 597 held-out digits; agree: top-1 agreement with the original model")
    columns = "".join(f" {f'p50 {t}T':>9} {'x':>6}" for t in thread_counts)
    header = f"{'model':<12} {'variant':<27} {'size KB':>9}{columns} {f'p90 {cores}T':>9} {'accuracy':>9} {'agree':>7}"
    print(header)
    print("-" * len(header))
    for name, path in paths.items():
        with quiet():
            source = load_model(path)
        xs = x if name == "digits-cnn" else upscale(x)
        calibration = Dataset([xs[:200]], y[:200])  # training samples, as a user would calibrate
        evaluation_x, evaluation_y = xs[1200:], y[1200:]
        reference = source.predict([evaluation_x])[0]
        contents, predicts = {}, {}
        for precision in ("fp32", "fp16", "int8", "dynamic-int8"):
            profile = base.model_copy(update={"build": base.build.model_copy(update={"precision": Precision(precision)})})
            with quiet():
                artifact = export_onnx(source, profile, calibration)
            label = {"int8": "int8 QDQ (edgepack)", "dynamic-int8": "dynamic-int8 (edgepack)"}.get(precision, f"{precision} (edgepack)")
            contents[label], predicts[label] = artifact.files["model.onnx"], artifact.predict
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "dyn.onnx"
            src.write_bytes(contents["fp32 (edgepack)"])
            with quiet():
                quantize_dynamic(str(src), str(out))  # what a user would otherwise do: all defaults
            contents["quantize_dynamic defaults"] = out.read_bytes()
        timings = {t: time_variants(contents, [evaluation_x[:1]], providers, t, rounds, per_round, warmup) for t in thread_counts}
        for label, content in contents.items():
            first = timings[thread_counts[0]][label]
            if isinstance(first, str):
                print(f"{name:<12} {label:<27} {len(content) / 1024:>9.1f}  cannot run: {first[:110]}")
                continue
            if label not in predicts:
                from edgepack.model.onnx_graph import OnnxRunner

                predicts[label] = lambda xs, i, o, r=OnnxRunner(content): r.predict(xs)  # noqa: E731
            out = predicts[label]([evaluation_x], [s.name for s in source.inputs], [s.name for s in source.outputs])[0]
            accuracy = float(np.mean(out.argmax(1) == evaluation_y))
            agree = float(np.mean(out.argmax(1) == reference.argmax(1)))
            cells = ""
            for t in thread_counts:
                p50 = timings[t][label][0]
                cells += f" {p50:>9.3f} {timings[t]['fp32 (edgepack)'][0] / p50:>5.2f}x"
            used = timings[cores][label][2][0].replace("ExecutionProvider", "")
            print(f"{name:<12} {label:<27} {len(content) / 1024:>9.1f}{cells} {timings[cores][label][1]:>9.3f} "
                  f"{100 * accuracy:>8.2f}% {100 * agree:>6.1f}%" + ("" if used == "CPU" else f"  ({used})"))
        print(f"{name:<12} {'(original Keras model)':<27} {'':>9}{' ' * (17 * len(thread_counts))} {'':>9} "
              f"{100 * np.mean(reference.argmax(1) == evaluation_y):>8.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
