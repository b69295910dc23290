#!/usr/bin/env python
"""Benchmark builds at real model sizes: edgepack's build beside the plain converter / quantizer.

Models of growing size (the digits CNN, MobileNetV2 at 224x224, the detector-shaped model of
tests/detectors.py at 320x320 and 640x640, a 1-D convolutional classifier, and a real trained text
detector — PaddleOCR's PP-OCRv4 detection model, 4.7 MB of ONNX with `Constant` weights, as the
rapidocr-onnxruntime wheel ships it (downloaded once with pip) — at 320 and 640 on rendered text) x targets
(raspberry-pi-4: TFLite int8; raspberry-pi-5-onnx: ONNX int8; jetson-orin-nano: ONNX fp16;
jetson-orin-nano with `precision: int8`). For each pair, edgepack's build and the plain tool on
the same model and data (tf.lite.TFLiteConverter; onnxruntime.quantization.quantize_static;
onnxconverter-common float16), Keras models reaching ONNX through edgepack's own Keras->ONNX
export. Each build runs in its own subprocess, so each peak is its own (VmHWM, read by the
process itself at its end), and is killed past --cap-gb (its resident memory polled every 0.2 s).
Wall time is the subprocess's, imports included, for both; size ratio is the artifact's bytes
over the model's float32 weights (parameters x 4). Fidelity is measured by edgepack's
verify on the evaluation split for both: worst dense output's SQNR (dB), or top-1 agreement.

    python scripts/bench_build_scale.py [--models digits,mnv2,det320,det640,conv1d]
        [--targets pi4,pi5-onnx,jetson-fp16,jetson-int8] [--cap-gb 8] [--out table.md] [--work DIR]

    python scripts/bench_build_scale.py --models ppocr320,ppocr640 --targets pi5-onnx,jetson-fp16,jetson-int8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

MODELS = ("digits", "mnv2", "det320", "det640", "conv1d", "ppocr320", "ppocr640")
PPOCR_WHEEL = "rapidocr_onnxruntime==1.4.4"  # ships models/ch_PP-OCRv4_det_infer.onnx
PPOCR_MODEL = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
TARGETS = {  # short name -> (profile, format, precision)
    "pi4": ("raspberry-pi-4", "tflite", "int8"),
    "pi5-onnx": ("raspberry-pi-5-onnx", "onnx", "int8"),
    "jetson-fp16": ("jetson-orin-nano", "onnx", "fp16"),
    "jetson-int8": ("jetson-orin-nano-int8", "onnx", "int8"),
}
JETSON_INT8 = "name: jetson-orin-nano-int8\nextends: jetson-orin-nano\nbuild: {precision: int8}\n"
POLL_S = 0.2


def make_model(name: str, work: Path) -> tuple[Path, Path]:
    """Write model NAME and its data (.npz) under WORK; return their paths."""
    import keras

    from tests.detectors import detector_images, write_detector

    keras.utils.set_random_seed(0)
    if name.startswith("det"):
        return write_detector(work, int(name[3:]), n=48)
    if name.startswith("ppocr"):
        return ppocr(work, int(name[5:]))
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = (d.images / 16.0).astype(np.float32)[..., None], d.target
        model = keras.Sequential([
            keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x[:1200], y[:1200], epochs=10, verbose=0)
        data = {"x": x[1200:], "y": y[1200:]}
    elif name == "mnv2":
        model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
        data = {"x": detector_images(224, 48)}
    elif name == "conv1d":  # about 3 MB of weights: a signal classifier
        rng = np.random.default_rng(0)
        t = np.linspace(0, 1, 1024, dtype=np.float32)
        y = rng.integers(0, 8, 256)
        x = np.sin(2 * np.pi * (y[:, None, None] + 2) * t[None, :, None] * np.arange(1, 9)[None, None, :]).astype(np.float32)
        x += rng.normal(0, 0.3, x.shape).astype(np.float32)
        model = keras.Sequential([keras.Input((1024, 8))] + [
            layer for width in (64, 128, 256, 256) for layer in (
                keras.layers.Conv1D(width, 9, padding="same", activation="relu"), keras.layers.MaxPooling1D(2))
        ] + [keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(8, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x[:192], y[:192], epochs=3, verbose=0)
        data = {"x": x[192:], "y": y[192:]}
    else:
        raise SystemExit(f"unknown model {name}: choose from {', '.join(MODELS)}")
    model.save(work / f"{name}.keras")
    np.savez(work / f"{name}.npz", **data)
    return work / f"{name}.keras", work / f"{name}.npz"


def ppocr(work: Path, size: int, n: int = 48) -> tuple[Path, Path]:
    """PP-OCRv4's text detector (from the rapidocr-onnxruntime wheel) and N rendered text images at SIZE."""
    import zipfile

    model = work / "ppocr.onnx"
    if not model.exists():
        wheels = work / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), PPOCR_WHEEL], check=True)
        with zipfile.ZipFile(next(wheels.glob("rapidocr_onnxruntime-*.whl"))) as wheel:
            model.write_bytes(wheel.read(PPOCR_MODEL))
    data = work / f"ppocr{size}.npz"
    np.savez(data, x=text_images(size, n))
    return model, data


def text_images(size: int, n: int, seed: int = 0) -> np.ndarray:
    """N images of dark words on light backgrounds, normalised as PaddleOCR does (ImageNet mean and
    std), NCHW float32. Pillow draws them with its own font."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    words = "edge pack model device jetson raspberry quantize latency memory tensor invoice total amount date 2026 receipt".split()
    out = np.empty((n, 3, size, size), np.float32)
    for k in range(n):
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(150, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 9))):
            height = int(rng.integers(size // 24, size // 8))
            text = " ".join(rng.choice(words, int(rng.integers(1, 4))))
            at = (int(rng.integers(0, size // 2)), int(rng.integers(0, size - height)))
            draw.text(at, text, fill=tuple(int(v) for v in rng.integers(0, 100, 3)), font=ImageFont.load_default(size=height))
        pixels = (np.asarray(image, np.float32) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
        out[k] = pixels.transpose(2, 0, 1)
    return out


def peak_mb() -> float:
    from edgepack.builder.memory import peak_rss_mb

    return peak_rss_mb()


def one_edgepack(model: Path, data: Path, target: str, out: Path) -> dict:
    """Build with edgepack (no cache) and report what the manifest says."""
    import edgepack

    result = edgepack.build(model, target, data=data, out=out, use_cache=False)
    m = result.manifest
    return {
        "status": "ok" if m.passed else "failed", "precision": m.build.get("precision_used", m.precision.value),
        "bytes": result.size_bytes, "fp32_bytes": fp32_bytes(model, m.source.params), "fidelity": fidelity_text(m.fidelity),
        "strategy": m.facts.quantization.strategy if m.facts.quantization else "",
    }


def fp32_bytes(model: Path, params: int | None) -> int:
    """The float32 model's size: its parameters x 4, or an ONNX file's own size."""
    return 4 * params if params else model.stat().st_size


def splits(model_path: Path, data: Path, profile_name: str):
    from edgepack.model.data import load_data, split
    from edgepack.model.source import load_model
    from edgepack.profile.store import Catalog

    profile = Catalog().load(profile_name).profile
    model = load_model(model_path)
    calibration, evaluation = split(load_data(data, model.inputs, model.outputs), profile.build.calibration_samples)
    return model, profile, calibration, evaluation


def one_plain(model_path: Path, data: Path, target: str, fmt: str, precision: str, work: Path) -> dict:
    """The plain tool on the same model and calibration/evaluation split as edgepack's build."""
    from edgepack.builder.verify import verify

    model, profile, calibration, evaluation = splits(model_path, data, target)
    names = [s.name for s in model.inputs]
    if fmt == "tflite" and model_path.suffix == ".onnx":
        return {"status": "no plain tool (ONNX to TFLite takes onnx2tf)", "precision": precision}
    if fmt == "tflite":
        import tensorflow as tf

        from edgepack.builder.convert.tflite import tflite_artifact

        converter = tf.lite.TFLiteConverter.from_keras_model(model.keras_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[i : i + 1] for x in calibration.x] for i in range(len(calibration)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        artifact = tflite_artifact(converter.convert())
    else:
        import onnx

        from edgepack.builder.convert.onnx_from_tf import tf_to_onnx

        float_path, out_path = work / "float.onnx", work / "plain.onnx"
        if model_path.suffix == ".onnx":
            float_path = model_path  # as the user has it
        else:
            proto = tf_to_onnx(model, profile.build.onnx.opset)
            onnx.save(proto, str(float_path))
            del proto
        if precision == "fp16":
            from onnxconverter_common import float16

            onnx.save(float16.convert_float_to_float16(onnx.load(str(float_path)), keep_io_types=True), str(out_path))
        else:
            from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.items = iter([{n: x[i : i + 1] for n, x in zip(names, calibration.x)} for i in range(len(calibration))])

                def get_next(self):
                    return next(self.items, None)

            quantize_static(str(float_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ)
        artifact = onnx_artifact(out_path)
    fidelity = verify(model, artifact, evaluation, profile)
    return {"status": "ok" if fidelity.passed else "failed", "precision": precision, "bytes": artifact.size_bytes,
            "fp32_bytes": fp32_bytes(model_path, model.params), "fidelity": fidelity_text(fidelity), "strategy": "plain tool"}


def onnx_artifact(path: Path):
    import onnxruntime as ort

    from edgepack.builder.convert import Artifact

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def predict(xs, input_names, output_names):
        feed = {i.name: x.astype(np.float32) for i, x in zip(session.get_inputs(), xs)}
        return session.run(None, feed)

    return Artifact({path.name: path.read_bytes()}, path.name, [], [], predict)


def fidelity_text(f) -> str:
    dense = [o.sqnr_db for o in f.outputs if o.kind == "dense"]
    if dense:
        return f"SQNR {min(dense):.1f} dB"
    return f"top-1 {100 * f.top1_agreement:.1f}%" if f.top1_agreement is not None else "-"


def child(args) -> None:
    """Run one build in this process and print one JSON line with its figures."""
    start = time.perf_counter()
    profile, fmt, precision = TARGETS[args.target]
    work = Path(args.work)
    cwd_before = sorted(os.listdir(os.getcwd()))
    if args.tool == "edgepack":
        row = one_edgepack(Path(args.model), Path(args.data), profile, work / "bundle")
    else:
        row = one_plain(Path(args.model), Path(args.data), profile, fmt, precision, work)
    row["cwd_clean"] = sorted(os.listdir(os.getcwd())) == cwd_before
    row.update(peak_mb=peak_mb(), wall_s=time.perf_counter() - start)
    print("RESULT " + json.dumps(row), flush=True)


def run_capped(command: list[str], cap_mb: float, cwd: Path, timeout_s: float) -> dict:
    """Run COMMAND, killing it past CAP_MB resident or TIMEOUT_S; return its RESULT line, or why it died."""
    start = time.perf_counter()
    # Output to files: a chatty converter would fill a pipe nobody reads while we poll, and block.
    out_file, err_file = tempfile.TemporaryFile(mode="w+"), tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(command, cwd=cwd, stdout=out_file, stderr=err_file, text=True)
    killed = None
    while proc.poll() is None:
        try:
            rss = next(int(line.split()[1]) for line in open(f"/proc/{proc.pid}/status") if line.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            rss = 0
        if rss > cap_mb:
            killed = f"killed past the {cap_mb / 1024:.0f} GB cap"
        elif time.perf_counter() - start > timeout_s:
            killed = f"killed after {timeout_s:.0f} s"
        if killed:
            proc.kill()
            break
        time.sleep(POLL_S)
    proc.wait()
    wall = time.perf_counter() - start
    out_file.seek(0)
    err_file.seek(0)
    out, err = out_file.read(), err_file.read()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    last = (err.strip().splitlines() or ["no output"])[-1][:120]
    return {"status": killed or f"error: {last}", "wall_s": wall, "peak_mb": cap_mb if killed and "cap" in killed else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--tools", default="plain,edgepack")
    parser.add_argument("--cap-gb", type=float, default=8.0)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here too")
    parser.add_argument("--work", type=Path, default=None, help="where models, data and bundles go (default: a temporary directory)")
    parser.add_argument("--child", nargs=5, metavar=("TOOL", "MODEL", "DATA", "TARGET", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tool, model, data, target, work = args.child
        child(argparse.Namespace(tool=tool, model=model, data=data, target=target, work=work))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="edgepack-scale-"))
    header = "| model | model MB | target | tool | result | precision | size ratio | fidelity | peak RSS MB | wall s |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    print("\n".join(lines), flush=True)
    for name in args.models.split(","):
        model, data = made(name, work)
        fp32_mb = model_mb(model)
        for target in args.targets.split(","):
            for tool in args.tools.split(","):
                job = work / f"{name}-{target}-{tool}"
                job.mkdir(exist_ok=True)
                here = job / "cwd"  # the build's working directory: only the profile it may name is there
                (here / "targets").mkdir(parents=True, exist_ok=True)
                (here / "targets" / "jetson-orin-nano-int8.yaml").write_text(JETSON_INT8)
                command = [sys.executable, __file__, "--child", tool, str(model), str(data), target, str(job)]
                row = run_capped(command, args.cap_gb * 1024, here, args.timeout_s)
                ratio = f"{row['bytes'] / row['fp32_bytes']:.2f}x" if row.get("bytes") and row.get("fp32_bytes") else "-"
                peak = f"{row['peak_mb']:.0f}" if row.get("peak_mb") else "-"
                status = row["status"] + ("" if row.get("cwd_clean", True) else " (left files in the working directory)")
                line = (f"| {name} | {fp32_mb:.1f} | {TARGETS[target][0]} {TARGETS[target][2]} | {tool} | {status} | {row.get('precision', '-')} "
                        f"| {ratio} | {row.get('fidelity', '-')} | {peak} | {row['wall_s']:.1f} |")
                lines.append(line)
                print(line, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


def made(name: str, work: Path) -> tuple[Path, Path]:
    """The model and data for NAME under WORK, made once (in a subprocess: this process stays small)."""
    if name.startswith("ppocr") and (work / f"{name}.npz").exists():
        return work / "ppocr.onnx", work / f"{name}.npz"
    existing = sorted(work.glob(f"{'detector' + name[3:] if name.startswith('det') else name}.keras"))
    if existing:
        return existing[0], existing[0].with_suffix(".npz")
    code = f"import sys; sys.path[:0]={[str(ROOT), str(ROOT / 'scripts')]!r}; from bench_build_scale import make_model; from pathlib import Path; make_model({name!r}, Path({str(work)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=work)
    return made(name, work)


def model_mb(path: Path) -> float:
    """The model's size in MB as saved (.keras: its float32 weights and a little structure)."""
    return path.stat().st_size / 2**20


if __name__ == "__main__":
    main()
