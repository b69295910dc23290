"""A stand-in for NVIDIA's trtexec on machines without TensorRT (CI has no GPU).

It takes the options the agent passes, prints trtexec's own output (the real text kept in
fixtures/), and does the work with onnxruntime on the CPU: an "engine" is the ONNX model's bytes
behind a marker, --exportTimes holds the latencies of real onnxruntime runs, and --exportOutput
the real outputs for --loadInputs. Each call is appended to $FAKE_TRT_LOG so a test can count
engine builds. What this cannot show is TensorRT itself: that needs a Jetson or a GPU machine.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
MARKER = b"FAKE-TRT-ENGINE\n"
DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8", "tensor(uint8)": "uint8"}


def options(argv: list[str]) -> dict:
    found = {}
    for arg in argv:
        key, _, value = arg.lstrip("-").partition("=")
        found[key] = value
    return found


def unquote(name: str) -> str:
    return name[1:-1] if name.startswith("'") and name.endswith("'") else name


def pairs(text: str) -> dict:
    """'name':value,other:value -> {name: value} (a quoted name may hold a colon)."""
    result = {}
    for item in text.split(","):
        name, _, value = item.rpartition(":")
        result[unquote(name)] = value
    return result


def fixture_lines(name: str, start: str | None = None, stop: str | None = None) -> str:
    lines = (FIXTURES / name).read_text().splitlines()
    if start:
        lines = lines[next(i for i, line in enumerate(lines) if start in line):]
    if stop:
        lines = lines[: next(i for i, line in enumerate(lines) if stop in line) + 1]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    opts = options(argv)
    with open(os.environ.get("FAKE_TRT_LOG", os.devnull), "a") as log:
        log.write(" ".join(argv) + "\n")
    banner = f"&&&& RUNNING TensorRT.trtexec [TensorRT v8602] # trtexec {' '.join(argv)}\n"
    if "help" in opts:
        sys.stdout.write(banner + "=== Model Options ===\n  --onnx=<file>  ONNX model\n")
        return 0
    import onnxruntime as ort

    if "onnx" in opts:
        content = Path(opts["onnx"]).read_bytes()
        try:
            ort.InferenceSession(content, providers=["CPUExecutionProvider"])
        except Exception:
            sys.stdout.write(fixture_lines("trtexec_8.6_parse_failure.txt"))
            return 1
        Path(opts["saveEngine"]).write_bytes(MARKER + content)
        sys.stdout.write(fixture_lines("trtexec_8.6_orin_fp16.txt", stop="Engine built in"))
        sys.stdout.write("&&&& PASSED TensorRT.trtexec [TensorRT v8602] # trtexec\n")
        return 0
    engine = Path(opts["loadEngine"]).read_bytes()
    assert engine.startswith(MARKER), "not an engine this fake built"
    session = ort.InferenceSession(engine[len(MARKER):], providers=["CPUExecutionProvider"])
    shapes = {k: [int(d) for d in v.split("x")] for k, v in pairs(opts["shapes"]).items()} if opts.get("shapes") else {}
    loaded = pairs(opts["loadInputs"]) if opts.get("loadInputs") else {}
    feed = {}
    for node in session.get_inputs():
        shape = shapes.get(node.name) or [d if isinstance(d, int) and d > 0 else 1 for d in node.shape]
        dtype = DTYPES[node.type]
        feed[node.name] = np.fromfile(loaded[node.name], dtype=dtype).reshape(shape) if node.name in loaded else np.zeros(shape, dtype)
    times = []
    runs = max(int(opts.get("iterations", 10)), 1)
    deadline = time.perf_counter() + float(opts.get("duration", 3))
    while len(times) < runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        outputs = session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    if opts.get("exportTimes"):
        # The keys of trtexec's --exportTimes trace (samples/trtexec/tracer.py reads the same).
        trace, clock = [], 0.0
        for t in times:
            trace.append({"startInMs": clock, "endInMs": clock, "startComputeMs": clock, "endComputeMs": clock + t,
                          "startOutMs": clock + t, "endOutMs": clock + t, "inMs": 0.0, "computeMs": t, "outMs": 0.0,
                          "latencyMs": t, "endToEndMs": t})
            clock += t
        Path(opts["exportTimes"]).write_text(json.dumps(trace))
    if opts.get("exportOutput"):
        exported = [
            {"name": node.name, "dimensions": "x".join(str(d) for d in y.shape), "values": y.ravel().tolist()}
            for node, y in zip(session.get_outputs(), outputs)
        ]
        Path(opts["exportOutput"]).write_text(json.dumps(exported))
    sys.stdout.write(fixture_lines("trtexec_8.6_orin_fp16.txt", start="Engine deserialized in"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
