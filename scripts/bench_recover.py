#!/usr/bin/env python
"""Benchmark automatic recovery: the plain quantization recipe against edgepack's result.

For the digits CNN, MobileNetV2 (weights=None, 96x96, random inputs) and two models built to
break quantization (an outlier input feature; weights beyond fp16's range), build for a TFLite
int8, a TFLite fp16, an ONNX int8 and an ONNX fp16 target twice: with `fallback: off` (the plain
recipe) and with `fallback: auto`. Report agreement with the original model, size (and relative
to the same format in fp32), batch-1 latency on this CPU, and what recovery chose.

`--classes` runs the four failure classes instead, each the plain recipe against edgepack:
(a) an encoder-decoder's sigmoid map whose fp16 weights overflow, (b) an ONNX classifier fed
integer ids, entropy-calibrated, (c) int8 judged on out-of-domain inputs, (d) 75% magnitude
sparsity with 300 labelled samples (plain: one-shot pruning, 2 epochs).

    .venv/bin/python scripts/bench_recover.py [--quick] [--runs N] [--classes]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

TARGETS = ("raspberry-pi-4", "pixel-8", "raspberry-pi-5-onnx", "jetson-orin-nano")


def latency_ms(bundle: Path, runs: int) -> float:
    """Median batch-1 latency of a bundle's artifact on this CPU (2 threads)."""
    import json

    manifest = json.loads((bundle / "manifest.json").read_text())
    x = np.load(bundle / "reference.npz")["in_0"][:1]
    path = bundle / manifest["artifact"]
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path), num_threads=2)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], x.astype(d["dtype"]))
        call = it.invoke
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        first = session.get_inputs()[0]
        feed = {first.name: x.astype(np.int64 if "int64" in first.type else np.float32)}
        call = lambda: session.run(None, feed)  # noqa: E731
    for _ in range(10):
        call()
    times = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - t) / 1e6)
    return float(np.median(times))


def models(work: Path, quick: bool) -> list[tuple[str, Path, Path]]:
    import keras

    from edgepack.examples import digits_data, write_example
    from tests.hard_models import fp16_overflow_model, outlier_input_model

    digits = digits_data()
    cnn, data = write_example(work / "digits")
    out = [("digits CNN", cnn, data), ("outlier input", *outlier_input_model(work, digits)), ("fp16 overflow", *fp16_overflow_model(work, digits))]
    if not quick:
        keras.utils.set_random_seed(0)
        net = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
        net.save(work / "mobilenet.keras")
        np.savez(work / "mobilenet.npz", x=np.random.default_rng(0).uniform(-1, 1, (400, 96, 96, 3)).astype(np.float32))
        out.append(("MobileNetV2 96", work / "mobilenet.keras", work / "mobilenet.npz"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave MobileNetV2 out")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--classes", action="store_true", help="the four failure classes, plain recipe against edgepack")
    args = parser.parse_args()
    if args.classes:
        return failure_classes(args.runs)

    from edgepack.builder.pipeline import build
    from edgepack.profile.store import Catalog, SearchDir, builtin_dir

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        targets = work / "targets"
        targets.mkdir()
        for t in TARGETS:
            (targets / f"{t}-plain.yaml").write_text(f"extends: {t}\nbuild: {{fallback: off}}\n")
            fmt = "onnx" if "onnx" in t or "jetson" in t else "tflite"
            (targets / f"{t}-fp32.yaml").write_text(f"extends: {t}\nbuild: {{format: {fmt}, precision: fp32}}\n")
        catalog = Catalog([SearchDir("project", targets), SearchDir("builtin", builtin_dir())])
        print("model | target | variant | passed | top-1 agreement % | size KB | x fp32 size | latency ms | strategy (layers in float)")
        for name, model, data in models(work, args.quick):
            for target in TARGETS:
                fp32 = build(model, f"{target}-fp32", data=data, out=work / "b" / f"{name}-{target}-fp32", catalog=catalog)
                for variant, profile in (("plain", f"{target}-plain"), ("edgepack", target)):
                    r = build(model, profile, data=data, out=work / "b" / f"{name}-{profile}", catalog=catalog)
                    q = r.manifest.facts.quantization.model_dump(mode="json")
                    chosen = next((a for a in q.get("attempts", []) if a["strategy"] == q.get("strategy") and a["passed"]), None)
                    layers = f" ({len(chosen['float_layers'])})" if chosen and chosen["float_layers"] else ""
                    agreement = r.manifest.fidelity.top1_agreement
                    print(
                        f"{name} | {target} | {variant} | {r.passed} | {100 * agreement:.2f} | {r.size_bytes / 1024:.1f} | "
                        f"{r.size_bytes / fp32.size_bytes:.3f} | {latency_ms(r.bundle, args.runs):.3f} | {q.get('strategy', '-')}{layers}"
                    )
    return 0


def failure_classes(runs: int) -> int:
    """Build each failure class with the plain recipe and with edgepack; print one row each."""
    from edgepack.builder.pipeline import build
    from edgepack.examples import digits_cnn, digits_data
    from edgepack.profile.store import Catalog, SearchDir, builtin_dir
    from tests.hard_models import integer_input_onnx_model, sigmoid_map_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        digits = digits_data()
        x, y = digits
        digits_cnn(x[:1200], y[:1200], epochs=12).save(work / "cnn.keras")
        np.savez(work / "calib.npz", x=x[1200:1500], y=y[1200:1500])
        rng = np.random.default_rng(0)
        np.savez(work / "ood.npz", x=np.clip(x[1500:] * 2.5 + rng.normal(0, 0.3, x[1500:].shape), 0, 3).astype(np.float32))
        np.savez(work / "eval.npz", x=x[1500:], y=y[1500:])
        broken_map, map_data = sigmoid_map_model(work, digits, break_fp16=True)
        ids, ids_data = integer_input_onnx_model(work)
        targets = work / "targets"
        targets.mkdir()
        profiles = {
            "map-fp16": "extends: pixel-8",
            "map-onnx-fp16": "extends: jetson-orin-nano",
            "ids-int8": "extends: raspberry-pi-5-onnx\nbuild: {onnx: {calibration_method: entropy}}",
            "ood-int8": "extends: raspberry-pi-4",
            "sparse": "extends: raspberry-pi-4\nbuild: {precision: fp32, prune: {sparsity: 0.75}}",
        }
        for name, text in profiles.items():
            (targets / f"{name}.yaml").write_text(text + "\n")
            plain = "\nbuild: {fallback: off}\n" if name != "sparse" else "\nbuild: {precision: fp32, prune: {sparsity: 0.75, schedule: one-shot, fine_tune_epochs: 2}}\n"
            (targets / f"{name}-plain.yaml").write_text(f"extends: {name}{plain}")
        catalog = Catalog([SearchDir("project", targets), SearchDir("builtin", builtin_dir())])
        cases = [
            ("(a) sigmoid map, fp16 overflow", "map-fp16", broken_map, map_data, None),
            ("(a) sigmoid map, ONNX fp16", "map-onnx-fp16", broken_map, map_data, None),
            ("(b) integer ids, ONNX int8", "ids-int8", ids, ids_data, None),
            ("(c) out-of-domain int8", "ood-int8", work / "cnn.keras", work / "calib.npz", work / "ood.npz"),
            ("(d) 75% sparsity, 300 samples", "sparse", work / "cnn.keras", work / "calib.npz", work / "eval.npz"),
        ]
        print("class | variant | passed | metric | size KB | latency ms | precision | strategy")
        for label, profile, model, data, eval_data in cases:
            for variant, name in (("plain", f"{profile}-plain"), ("edgepack", profile)):
                start = time.perf_counter()
                r = build(model, name, data=data, eval_data=eval_data, out=work / "b" / name, catalog=catalog, use_cache=False)
                f = r.manifest.fidelity
                if f.pruning is not None and f.pruning.accuracy_drop is not None:
                    metric = f"pruning {-100 * f.pruning.accuracy_drop:+.2f} points"
                elif f.top1_agreement is not None:
                    metric = f"top-1 {100 * f.top1_agreement:.2f}%"
                else:
                    worst = min(f.outputs, key=lambda o: o.sqnr_db)
                    metric = f"SQNR {worst.sqnr_db:.1f} dB, cosine {worst.cosine:.4f}"
                print(
                    f"{label} | {variant} | {r.passed} | {metric} | {r.size_bytes / 1024:.1f} | {latency_ms(r.bundle, runs):.3f} | "
                    f"{r.manifest.precision.value} | {r.manifest.facts.quantization.strategy} ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
