"""Run a .tflite model on the host, float in and out, and the (de)quantization every exporter shares.

`TfliteRunner` is the host-side TFLite interpreter wrapper: the TFLite exporter checks its
artifacts with it and TFLite Micro's host check (`edgepack.micro.host`) builds on it.
"""

from __future__ import annotations

import numpy as np

from edgepack.bundle import TensorSpec


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Float values to an integer tensor: q = round(x / scale) + zero_point, clipped to the type."""
    info = np.iinfo(dtype)
    # In float64, as the agent and the bundle's loader do: the values checked here are those fed on the device.
    return np.clip(np.round(np.asarray(x, np.float64) / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer tensor back to float values: x = scale * (q - zero_point)."""
    return (q.astype(np.float32) - zero_point) * scale


class TfliteRunner:
    """Run a .tflite model on the host with ai-edge-litert, one sample at a time, float in and out."""

    def __init__(self, content: bytes):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=content)
        self.runner = self.interpreter.get_signature_runner()
        self.input_details = self.runner.get_input_details()
        self.output_details = self.runner.get_output_details()

    def specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Return the artifact's input and output specs, with quantization where it applies."""

        def spec(name: str, d: dict) -> TensorSpec:
            scale, zero = d["quantization"]
            quantized = scale != 0.0
            return TensorSpec(
                name=name, shape=[int(s) for s in d["shape"]], dtype=np.dtype(d["dtype"]).name,
                scale=float(scale) if quantized else None, zero_point=int(zero) if quantized else None,
            )

        return ([spec(n, d) for n, d in self.input_details.items()], [spec(n, d) for n, d in self.output_details.items()])

    def predict(self, xs: list[np.ndarray], input_names: list[str], output_names: list[str]) -> list[np.ndarray]:
        if len(input_names) == 1 and len(self.input_details) == 1:
            input_names = list(self.input_details)  # one input: its name does not matter
        outputs: list[list[np.ndarray]] = [[] for _ in output_names]
        for i in range(len(xs[0])):
            feed = {name: _quantize(x[i : i + 1], self.input_details[name]) for name, x in zip(input_names, xs)}
            result = self.runner(**feed)
            for k, name in enumerate(output_names):
                outputs[k].append(_dequantize(result[name], self.output_details[name]))
        return [np.concatenate(o) for o in outputs]


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    return x.astype(dtype) if np.issubdtype(dtype, np.floating) else quantize(x, *detail["quantization"], dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    floating = np.issubdtype(np.dtype(detail["dtype"]), np.floating)
    return y.astype(np.float32) if floating else dequantize(y, *detail["quantization"])
