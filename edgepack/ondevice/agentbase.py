"""What the agent's modules share: limits, names, the failure type and its one-line description, the stdout guard."""

from __future__ import annotations

import json
import os
import sys

from .common import np


PROTOCOL_VERSION = 2  # 2: operators, sustained, memory.gpu, the check's gate (optional fields)

MAX_RUNS = 100000

# The same limits as the host's profile schema (edgepack.profile.schema.BENCH_LIMITS).
LIMITS = {"runs": MAX_RUNS, "warmup": 10000, "min_seconds": 3600.0, "cold_loads": 100}

PROBE_TIMEOUT_S = 600

ENGINES = ("tflite", "onnxruntime", "tensorrt")

SUFFIX_ENGINE = {".tflite": "tflite", ".onnx": "onnxruntime"}

SUFFIX_ENGINES = {".tflite": ("tflite",), ".onnx": ("onnxruntime", "tensorrt")}

GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

# JetPack installs trtexec here, off PATH.
TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")

TRTEXEC_TIMEOUT_S = 3600  # an engine build on a small Jetson takes minutes

TRT_CHECK_CALLS = 4  # reference batches checked through trtexec (one process each)

STAGING_STALE_S = 3600  # a staging directory untouched this long belongs to an agent that was killed

# The forms per engine, each only where the device's runtime has it.
ONNX_FORMS = ("onnx-optimized", "ort-format")

TFLITE_FORMS = ("xnnpack-weight-cache",)

FORM_FILES = {"onnx-optimized": "model.optimized.onnx", "ort-format": "model.ort", "xnnpack-weight-cache": "model.xnnpack-cache"}

# Time to first answer: the app's other start-up work (a camera, a connection), stood in for by waiting.
STARTUP_WORK_MS = 200.0

FIRST_ANSWER_MARK = "EDGEPACK-FIRST-ANSWER "

LOADER = "edgepack_runtime.py"

ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}

class AgentFailure(Exception):
    """A reason the measurement cannot go on; it becomes one entry of ``errors``."""

class StdoutGuard:
    """Keep fd 1 for the report alone: everything else written to it lands on stderr."""

    def __init__(self):
        sys.stdout.flush()
        self.fd = os.dup(1)
        os.dup2(2, 1)

    def emit(self, doc: dict) -> None:
        sys.stdout.flush()
        data = (json.dumps(doc, allow_nan=False) + "\n").encode("utf-8")
        while data:
            data = data[os.write(self.fd, data):]

class Spec:
    """One tensor as the runtime takes it: shape (None: dynamic), numpy dtype, quantization."""

    def __init__(self, name, shape, dtype, scale=None, zero_point=None, key=None):
        self.name = name
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.scale = scale
        self.zero_point = zero_point
        self.key = key  # the runtime's handle: a tensor index or a name

def first_line(exc: BaseException) -> str:
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    return lines[0] if lines else type(exc).__name__

def describe(exc: BaseException) -> str:
    if isinstance(exc, AgentFailure):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: %s" % (str(exc) or "MemoryError")
    return "%s: %s" % (type(exc).__name__, first_line(exc))
