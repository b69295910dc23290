"""The plain ONNX Runtime quantizer on a model and data, as a user would run it: the baseline for
edgepack's ONNX builds (peak RSS and wall time come from `/usr/bin/time -v` around this script).

    python scripts/bench_onnx_plain.py MODEL.onnx DATA.npz [--calibration 24] [--evaluation 16] [--fp16]

Prints the size ratio and the SQNR of the first output against the float model on the samples
after the calibration ones; `--fp16` runs onnxconverter-common's float16 conversion instead.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--calibration", type=int, default=24)
    parser.add_argument("--evaluation", type=int, default=16)
    parser.add_argument("--fp16", action="store_true")
    args = parser.parse_args()
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    x = np.load(args.data)["x"].astype(np.float32)
    calib, evaluation = x[: args.calibration], x[args.calibration : args.calibration + args.evaluation]
    name = onnx.load(str(args.model), load_external_data=False).graph.input[0].name
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.onnx"
        if args.fp16:
            from onnxconverter_common import float16

            onnx.save(float16.convert_float_to_float16(onnx.load(str(args.model)), keep_io_types=True), str(out))
        else:
            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.feeds = iter([{name: calib[i : i + 8]} for i in range(0, len(calib), 8)])

                def get_next(self):
                    return next(self.feeds, None)

            quantize_static(str(args.model), str(out), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=False)
        seconds = time.perf_counter() - start
        size = out.stat().st_size / args.model.stat().st_size
        ref = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        r = np.concatenate([ref.run(None, {name: evaluation[i : i + 1]})[0] for i in range(len(evaluation))]).astype(np.float64)
        c = np.concatenate([got.run(None, {name: evaluation[i : i + 1]})[0] for i in range(len(evaluation))]).astype(np.float64)
    sqnr = 10 * np.log10(np.var(r) / max(np.mean((r - c) ** 2), 1e-30))
    print(f"{'fp16' if args.fp16 else 'int8 quantize_static'}: {seconds:.1f} s, {size:.2f}x size, SQNR {sqnr:.1f} dB")


if __name__ == "__main__":
    main()
