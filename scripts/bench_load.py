#!/usr/bin/env python
"""Benchmark load time on this machine: where it goes, the load-optimised forms, and time to first answer.

One TFLite (int8) and one ONNX (fp32) bundle of MobileNetV2 (keras.applications.MobileNetV2(weights=None):
224x224x3, 3.5 M parameters, nothing downloaded), built by edgepack and measured by `edgepack bench`
on the `local` device, side by side in one run:

  - keras.models.load_model of the source .keras file (what an app starts from without edgepack);
  - the plain runtime load (Interpreter / InferenceSession), cold and warm, and its phases;
  - each load-optimised form the agent made on the device (ONNX Runtime's graph optimised once here,
    LiteRT's XNNPACK weight cache), cold and warm, and its phases;
  - time to first answer with the bundle's loader (edgepack_runtime.py): plain and optimised, in the
    foreground and in the background while the app does 200 ms of other start-up work.

Every load is a fresh process (cold: its files evicted from the page cache); figures are medians.

Usage:
    .venv/bin/python scripts/bench_load.py [--loads N] [--threads N] [--workdir DIR]

The model and its bundles are kept in --workdir (default .cache/bench-load): a second run only measures.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

KERAS_LOAD = """
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
t0 = time.perf_counter_ns()
import keras
t1 = time.perf_counter_ns()
model = keras.models.load_model(sys.argv[1])
t2 = time.perf_counter_ns()
import numpy
model(numpy.zeros((1,) + tuple(model.inputs[0].shape[1:]), "float32"))
t3 = time.perf_counter_ns()
print((t1 - t0) / 1e6, (t2 - t1) / 1e6, (t3 - t2) / 1e6)
"""


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_bundles(workdir: Path) -> tuple[Path, dict[str, Path]]:
    """Save MobileNetV2 and build its two bundles (once, kept in WORKDIR); return (the .keras file, kind -> bundle)."""
    from edgepack.builder.pipeline import build
    from edgepack.profile.store import Catalog, SearchDir, builtin_dir

    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "mobilenet_v2.keras"
    if not source.exists():
        import keras

        keras.utils.set_random_seed(0)
        keras.applications.MobileNetV2(weights=None).save(source)
    data = workdir / "images.npz"
    if not data.exists():
        rng = np.random.default_rng(0)
        np.savez(data, x=rng.uniform(-1, 1, size=(32, 224, 224, 3)).astype("float32"))
    targets = workdir / "targets"
    targets.mkdir(exist_ok=True)
    # Random weights answer near-uniformly: the accuracy gate says nothing here.
    lenient = "budgets: {max_accuracy_drop: 1.0, max_p90_latency_ms: 100000}\nverify: {min_sqnr_db: -100, min_cosine: -1}\n"
    (targets / "load-tflite.yaml").write_text("extends: raspberry-pi-4\nbuild: {calibration_samples: 32}\n" + lenient)
    (targets / "load-onnx.yaml").write_text("extends: raspberry-pi-5-onnx\nbuild: {precision: fp32}\n" + lenient)
    catalog = Catalog([SearchDir("project", targets), SearchDir("builtin", builtin_dir())])
    bundles = {}
    for kind, target in (("TFLite int8", "load-tflite"), ("ONNX fp32", "load-onnx")):
        print(f"# building {kind} ...", file=sys.stderr, flush=True)
        bundles[kind] = build(source, target, data=data, out=workdir / target, catalog=catalog).bundle
    return source, bundles


def keras_loads(source: Path, n: int) -> tuple[float, float, float]:
    """Median (import keras, keras.models.load_model, first call) over N fresh processes, ms."""
    rows = []
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", KERAS_LOAD, str(source)], capture_output=True, text=True, check=True, timeout=600)
        rows.append([float(v) for v in out.stdout.split()[-3:]])
    return tuple(float(np.median(c)) for c in zip(*rows))


def med(values) -> float | None:
    return float(np.median(values)) if values else None


def fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def phases(p) -> str:
    return " + ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in (p or {}).items()) or "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5, help="fresh-process loads per figure (cold, warm, first answer)")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads [default: all usable cores]")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "bench-load")
    args = parser.parse_args()

    from edgepack.benchmark import BenchOptions, bench

    source, bundles = make_bundles(args.workdir)
    with tempfile.TemporaryDirectory() as tmp:
        # A local device of our own: its workdir (and load cache) starts empty, so the first bench makes the forms.
        for var in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
            os.environ[var] = os.path.join(tmp, var.lower())
        options = BenchOptions(runs=50, warmup=5, min_seconds=0, cold_loads=args.loads, threads=args.threads)
        results = {}
        for kind, bundle in bundles.items():
            print(f"# benching {kind} on local ...", file=sys.stderr, flush=True)
            results[kind] = bench(bundle, "local", options, store=False).report
        print("# keras.models.load_model ...", file=sys.stderr, flush=True)
        keras_import, keras_load, keras_first = keras_loads(source, args.loads)

    import onnxruntime

    import ai_edge_litert

    first = next(iter(results.values()))
    print(f"# {cpu_model()}, {first.system.cores_usable} usable cores, {first.runtime.threads} runtime threads; "
          f"ai_edge_litert {ai_edge_litert.__version__}, onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}")
    print(f"# MobileNetV2 (weights=None, 224x224x3); medians of {args.loads} fresh processes each; ms")
    kinds = list(results)
    rows: list[tuple[str, list[str]]] = [
        ("artifact KB", [fmt((b / "model.tflite").stat().st_size / 1024 if (b / "model.tflite").exists() else (b / "model.onnx").stat().st_size / 1024)
                         for b in bundles.values()]),
        ("keras: import keras", [fmt(keras_import)] * len(kinds)),
        ("keras: load_model(.keras)", [fmt(keras_load)] * len(kinds)),
        ("keras: first call", [fmt(keras_first)] * len(kinds)),
        ("plain: runtime import", [fmt(r.load.import_ms) for r in results.values()]),
        ("plain: load cold", [fmt(med(r.load.cold_ms)) for r in results.values()]),
        ("plain: load warm", [fmt(med(r.load.warm_ms)) for r in results.values()]),
        ("plain: memory the load added MB", [fmt(r.memory.load_mb) for r in results.values()]),
    ]
    for label, get in (
        ("optimised: form", lambda o: o.form),
        ("optimised: runtime import", lambda o: fmt(o.import_ms)),
        ("optimised: load cold", lambda o: fmt(med(o.cold_ms))),
        ("optimised: load warm", lambda o: fmt(med(o.warm_ms))),
        ("optimised: other forms tried (warm)", lambda o: ", ".join(f"{k} {fmt(v)}" for k, v in (o.alternatives_warm_ms or {}).items()) or "-"),
        ("optimised: answers max |err| vs host", lambda o: f"{o.check.max_abs_error:.3g}" if o.check else "-"),
        ("used by edgepack_runtime.load", lambda o: "yes" if o.used_by_loader else "no"),
    ):
        rows.append((label, [get(r.load.optimized) if r.load.optimized else "-" for r in results.values()]))
    rows.append(("warm load: plain / optimised", [
        f"{med(r.load.warm_ms) / med(r.load.optimized.warm_ms):.2f}x" if r.load.optimized else "-" for r in results.values()]))
    for form_label, optimised, background in (("plain", False, False), ("plain, background", False, True),
                                               ("optimised", True, False), ("optimised, background", True, True)):
        cells = []
        for r in results.values():
            fa = r.load.first_answer
            wanted = (r.load.optimized.form if optimised and r.load.optimized else None) if optimised else "plain"
            run = next((x for x in (fa.runs if fa else []) if x.form == wanted and x.background == background), None)
            cells.append(fmt(med(run.ms)) if run else "-")
        rows.append((f"first answer: {form_label}", cells))
    width = max(len(label) for label, _ in rows)
    col = max(20, *(len(c) for _, cells in rows for c in cells))
    print(f"{'':<{width}}  " + "  ".join(f"{k:>{col}}" for k in kinds))
    for label, cells in rows:
        print(f"{label:<{width}}  " + "  ".join(f"{c:>{col}}" for c in cells))
    for kind, r in results.items():
        print(f"# {kind} phases (warm), plain: {phases(r.load.phases_ms)}")
        if r.load.optimized:
            print(f"# {kind} phases (warm), {r.load.optimized.form}: {phases(r.load.optimized.phases_ms)}")
    print("# first answer: import edgepack_runtime -> load -> 200 ms other start-up work (in the background variant, during the "
          "load) -> first predict, in a fresh process")
    for kind, r in results.items():
        for note in r.notes:
            print(f"# {kind}: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
