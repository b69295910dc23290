"""Time an artifact on the build host: batch-1 median latency, with the runtime the target uses (TFLite or ONNX Runtime).

Recovery uses it to compare the variant it chose with fp32: a variant that keeps layers in
float can be slower than plain fp32, and then it is not worth handing over.
"""

from __future__ import annotations

import time

import numpy as np

from edgepack.builder.convert import Artifact

WARMUP, RUNS = 10, 100
BUDGET_S = 2.0  # a large model gets fewer runs, not a longer build


def runner(artifact: Artifact, inputs: list[np.ndarray]):
    """Return a function that runs ARTIFACT once on the first sample of INPUTS (one array per model input), one thread."""
    content = artifact.files[artifact.artifact]
    sample = [x[:1] for x in inputs]
    if artifact.artifact.endswith(".onnx"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        feed = {spec.name: x.astype(np.float16 if "float16" in spec.type else x.dtype) for spec, x in zip(session.get_inputs(), sample)}
        return lambda: session.run(None, feed)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=1)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), sample):
        scale, zero = d["quantization"]
        value = np.round(x / scale + zero) if scale else x  # integer inputs: the artifact's quantization
        it.set_tensor(d["index"], value.astype(d["dtype"]))
    return it.invoke


def compare_latency(a: Artifact, b: Artifact, inputs: list[np.ndarray]) -> tuple[float, float]:
    """Median batch-1 latency (ms) of A and of B, timed in turns so that load on the host weighs on both alike."""
    calls = (runner(a, inputs), runner(b, inputs))
    for _ in range(WARMUP):
        for call in calls:
            call()
    samples: tuple[list[float], list[float]] = ([], [])
    deadline = time.perf_counter() + BUDGET_S
    for _ in range(RUNS):
        if samples[0] and time.perf_counter() > deadline:
            break
        for call, out in zip(calls, samples):
            start = time.perf_counter_ns()
            call()
            out.append((time.perf_counter_ns() - start) / 1e6)
    return float(np.median(samples[0])), float(np.median(samples[1]))
