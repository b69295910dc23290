#!/usr/bin/env python
"""Benchmark PyTorch sources against the same architecture written in Keras: export + build time, size, p50 on `local`.

Models (no downloads):
  - digits:           a CNN trained here on scikit-learn's digits (conv16-conv32-maxpool-dense64-dense10), in
                      PyTorch (NCHW) and as edgepack.examples.digits_cnn in Keras (NHWC), same layers and widths;
  - mobilenetv3-small: torchvision.models.mobilenet_v3_small(weights=None, num_classes=10) beside
                      keras.applications.MobileNetV3Small(weights=None, classes=10), 224x224x3, untrained,
                      calibrated and verified on random images (only where torchvision is installed).
Each is built for raspberry-pi-4 (TFLite int8), jetson-orin-nano (ONNX fp16), raspberry-pi-5-onnx (ONNX int8)
and, for digits, cortex-m4 (TFLite Micro; not benched: no microcontroller here). PyTorch's "export" is
torch.export.export + torch.export.save; edgepack's ONNX export (torch.onnx dynamo) and onnx2tf run inside its
build and are in the build time. The build cache is off; onnx2tf's environment is made before timing.
p50: edgepack's agent on the `local` device (one sample per run, warm-up apart), BenchOptions below.

Usage:
    python scripts/bench_torch.py [--workdir DIR] [--runs N]   (needs edgepack[torch])
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ["raspberry-pi-4", "jetson-orin-nano", "raspberry-pi-5-onnx", "cortex-m4"]


def torch_digits_net():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10), nn.Softmax(dim=1),
    )


def train_torch(net, x, y, epochs=15):
    import torch

    torch.manual_seed(0)
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        order = torch.randperm(len(xs))
        for i in range(0, len(xs), 32):
            b = order[i : i + 32]
            optimizer.zero_grad()
            torch.nn.functional.nll_loss(torch.log(net(xs[b]) + 1e-9), ys[b]).backward()
            optimizer.step()
    return net.eval()


def export_pt2(net, example, path: Path) -> float:
    import torch

    start = time.perf_counter()
    program = torch.export.export(net, (torch.from_numpy(example),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, path)
    return time.perf_counter() - start


def models(work: Path) -> list[dict]:
    """Train / make each model pair; return rows of {name, source, path, data, export_s}."""
    import keras

    from edgepack.examples import digits_cnn, digits_data

    x, y = digits_data()
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    np.savez(work / "digits-nhwc.npz", x=x[1200:], y=y[1200:])
    np.savez(work / "digits-nchw.npz", x=nchw[1200:], y=y[1200:])
    start = time.perf_counter()
    digits_cnn(x[:1200], y[:1200], epochs=15).save(work / "digits.keras")
    keras_s = time.perf_counter() - start
    net = train_torch(torch_digits_net(), nchw[:1200], y[:1200])
    found = [
        {"name": "digits", "source": "pytorch", "path": work / "digits.pt2", "data": work / "digits-nchw.npz",
         "export_s": export_pt2(net, nchw[:2], work / "digits.pt2"), "targets": TARGETS},
        {"name": "digits", "source": "keras", "path": work / "digits.keras", "data": work / "digits-nhwc.npz",
         "export_s": 0.0, "note": f"model.save {keras_s:.1f} s incl. training", "targets": TARGETS},
    ]
    try:
        import torchvision
    except Exception as exc:  # noqa: BLE001  (a torchvision that does not fit the torch build fails on import)
        print(f"# mobilenetv3-small skipped: torchvision is not importable here ({type(exc).__name__})", file=sys.stderr)
        return found
    rng = np.random.default_rng(0)
    images = rng.random((256, 224, 224, 3), dtype=np.float32)
    np.savez(work / "random-nhwc.npz", x=images)
    np.savez(work / "random-nchw.npz", x=np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    mobilenet = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10).eval()
    found.append({"name": "mobilenetv3-small", "source": "pytorch", "path": work / "mnv3.pt2", "data": work / "random-nchw.npz",
                  "export_s": export_pt2(mobilenet, np.ascontiguousarray(images[:2].transpose(0, 3, 1, 2)), work / "mnv3.pt2"),
                  "targets": TARGETS[:3]})
    keras.applications.MobileNetV3Small(weights=None, input_shape=(224, 224, 3), classes=10).save(work / "mnv3.keras")
    found.append({"name": "mobilenetv3-small", "source": "keras", "path": work / "mnv3.keras", "data": work / "random-nhwc.npz",
                  "export_s": 0.0, "targets": TARGETS[:3]})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    import torch  # noqa: F401  before TensorFlow: a CUDA build of torch imported after TensorFlow can crash the process

    try:
        import torchvision  # noqa: F401  (same reason)
    except Exception:  # noqa: BLE001
        pass
    from edgepack.benchmark import BenchOptions, bench
    from edgepack.model.onnx_tflite import onnx2tf_python
    from edgepack.builder.pipeline import build

    onnx2tf_python()  # made once (minutes) before anything is timed
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-torch-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for m in models(work):
        for target in m["targets"]:
            print(f"# {m['name']} ({m['source']}) -> {target}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            result = build(m["path"], target, data=m["data"], out=work / f"{m['name']}-{m['source']}-{target}", use_cache=False)
            build_s = time.perf_counter() - start
            p50 = None
            if target != "cortex-m4":
                options = BenchOptions(runs=args.runs, warmup=10, min_seconds=0, cold_loads=1, allow_failed=True)
                report = bench(result.bundle, "local", options, store=False).report
                p50 = report.latency_ms.p50 if report.latency_ms else None
            f = result.manifest.fidelity
            rows.append((m["name"], m["source"], target, f"{result.manifest.format.value} {result.manifest.precision.value}",
                         m["export_s"], build_s, result.size_bytes / 1024, p50, f.accuracy_drop, f.top1_agreement, result.passed))


    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}; "
          f"bench: {args.runs} runs after 10 warm-up, batch 1, local device")
    print("| model | source | target | artifact | export s | build s | size KB | p50 ms | acc. drop | top-1 agree | gate |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for name, source, target, kind, export_s, build_s, kb, p50, drop, agree, passed in rows:
        print(f"| {name} | {source} | {target} | {kind} | {export_s:.1f} | {build_s:.1f} | {kb:.1f} | "
              f"{'-' if p50 is None else f'{p50:.3f}'} | {'-' if drop is None else f'{100 * drop:+.2f} pt'} | "
              f"{'-' if agree is None else f'{100 * agree:.1f}%'} | {'pass' if passed else 'FAIL'} |")


if __name__ == "__main__":
    main()
