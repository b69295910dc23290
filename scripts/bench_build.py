#!/usr/bin/env python
"""Benchmark `edgepack build` against the recipe a user would otherwise follow.

For the digits CNN (trained here on scikit-learn's digits) and MobileNetV2 (weights=None,
random inputs: its figures are about size, speed and agreement, not accuracy), measure per
precision: build time, artifact size relative to the fp32 TFLite, batch-1 latency under
ai-edge-litert versus the original Keras model, and accuracy / agreement with the original.
The comparison recipe is `tf.lite.TFLiteConverter` with `Optimize.DEFAULT` and nothing else.
Finally, the time of a cached rebuild against the first build.

    .venv/bin/python scripts/bench_build.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8")
THREADS = 2


def litert_latency_ms(content: bytes, x: np.ndarray, runs: int) -> tuple[float, np.ndarray]:
    """Median batch-1 latency of a .tflite under ai-edge-litert, and its float outputs on X."""
    from ai_edge_litert.interpreter import Interpreter

    from edgepack.model.tflite_runner import TfliteRunner

    runner = TfliteRunner(content)
    outputs = runner.predict([x], [next(iter(runner.input_details))], [next(iter(runner.output_details))])[0]
    it = Interpreter(model_content=content, num_threads=THREADS)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    sample = np.zeros(inp["shape"], inp["dtype"])
    it.set_tensor(inp["index"], sample)
    for _ in range(5):
        it.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        it.invoke()
        times.append((time.perf_counter_ns() - t) / 1e6)
    return float(np.median(times)), outputs


def keras_latency_ms(model, x: np.ndarray, runs: int) -> float:
    """Median batch-1 latency of the Keras model called through a compiled tf.function."""
    import tensorflow as tf

    fn = tf.function(lambda t: model(t, training=False))
    sample = tf.constant(x[:1])
    for _ in range(5):
        fn(sample)
    times = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        fn(sample).numpy()
        times.append((time.perf_counter_ns() - t) / 1e6)
    return float(np.median(times))


def plain_recipe(model) -> tuple[bytes, float]:
    import tensorflow as tf

    from edgepack.quiet import quiet

    t = time.perf_counter()
    with quiet():
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        content = converter.convert()
    return content, time.perf_counter() - t


def score(reference: np.ndarray, outputs: np.ndarray, labels: np.ndarray | None) -> dict:
    out = {"agreement_pct": 100 * float(np.mean(reference.argmax(1) == outputs.argmax(1)))}
    if labels is not None:
        out["accuracy_pct"] = 100 * float(np.mean(outputs.argmax(1) == labels))
    return out


def bench_model(name: str, model_path: Path, data_path: Path, work: Path, runs: int) -> list[dict]:
    import keras

    from edgepack.builder.pipeline import build
    from edgepack.profile.store import Catalog, SearchDir, builtin_dir

    targets = work / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    catalog = Catalog([SearchDir("project", targets), SearchDir("builtin", builtin_dir())])
    data = np.load(data_path)
    x_eval, labels = data["x"][-300:], (data["y"][-300:] if "y" in data.files else None)
    model = keras.models.load_model(model_path, compile=False)
    reference = model.predict(x_eval, verbose=0)
    rows = [{"model": name, "variant": "keras original", "size_kb": model_path.stat().st_size / 1024,
             "latency_ms": keras_latency_ms(model, x_eval, runs), **score(reference, reference, labels)}]

    fp32_size = None
    for precision in PRECISIONS:
        target = f"bench-{precision}"
        (targets / f"{target}.yaml").write_text(
            f"extends: raspberry-pi-4\nbuild: {{precision: {precision}}}\nbudgets: {{max_accuracy_drop: 1.0, max_model_kb: 1000000}}\n"
        )
        t = time.perf_counter()
        result = build(model_path, target, data=data_path, out=work / target, use_cache=False, catalog=catalog)
        seconds = time.perf_counter() - t
        content = (result.bundle / "model.tflite").read_bytes()
        fp32_size = fp32_size or len(content)
        latency, outputs = litert_latency_ms(content, x_eval, runs)
        rows.append({"model": name, "variant": f"edgepack {precision}", "build_s": seconds, "size_kb": len(content) / 1024,
                     "size_vs_fp32": len(content) / fp32_size, "latency_ms": latency, **score(reference, outputs, labels)})

    content, seconds = plain_recipe(model)
    latency, outputs = litert_latency_ms(content, x_eval, runs)
    rows.append({"model": name, "variant": "plain Optimize.DEFAULT", "build_s": seconds, "size_kb": len(content) / 1024,
                 "size_vs_fp32": len(content) / fp32_size, "latency_ms": latency, **score(reference, outputs, labels)})

    # Cached rebuild of the int8 build, through the real cache.
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    t = time.perf_counter()
    build(model_path, "bench-int8", data=data_path, out=work / "c1", catalog=catalog)
    first = time.perf_counter() - t
    t = time.perf_counter()
    hit = build(model_path, "bench-int8", data=data_path, out=work / "c2", catalog=catalog)
    again = time.perf_counter() - t
    rows.append({"model": name, "variant": "int8 cached rebuild", "build_s": again, "first_build_s": first,
                 "rebuild_fraction": again / first, "cache_hit": hit.cached})
    return rows


def make_models(work: Path, quick: bool) -> list[tuple[str, Path, Path]]:
    import keras

    from edgepack.examples import write_example

    cnn, digits = write_example(work / "digits")
    models = [("digits CNN", cnn, digits)]
    if not quick:
        keras.utils.set_random_seed(0)
        net = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
        path = work / "mobilenet_v2.keras"
        net.save(path)
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (500, 224, 224, 3)).astype(np.float32)  # MobileNetV2's input range
        np.savez(work / "mobilenet_data.npz", x=x)
        models.append(("MobileNetV2 224", path, work / "mobilenet_data.npz"))
    return models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits CNN only")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per latency figure")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, model_path, data_path in make_models(work, args.quick):
            rows += bench_model(name, model_path, data_path, work / name.replace(" ", "_"), args.runs)
    columns = ["model", "variant", "build_s", "size_kb", "size_vs_fp32", "latency_ms", "accuracy_pct", "agreement_pct", "rebuild_fraction"]
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(f"{row[c]:.3f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
