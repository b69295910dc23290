"""Export a model for a microcontroller: TFLite Micro, full-integer int8, C source for the firmware.

The steps, each in its own module under `edgepack.micro`:
convert to int8 TFLite -> check every op against TFLite Micro (fail naming the layer) ->
tensor arena (TFLite Micro on the host where installed, else the planner's estimate) ->
flash/RAM fit and latency estimate -> model_data.h / model_data.cc.
A model that does not fit is still exported; the fit misses are `Artifact.failures`, which fail
the build (exit 1) and keep the bundle for inspection.
"""

from __future__ import annotations

from edgepack.builder.convert import Artifact
from edgepack.builder.convert.tflite import convert_tflite
from edgepack.model.tflite_runner import TfliteRunner
from edgepack.errors import BuildError
from edgepack.micro.graph import Graph
from edgepack.model.data import Dataset
from edgepack.model.source import SourceModel
from edgepack.profile.schema import Profile

HOST_ARENA_SLACK = 1 << 20  # the host interpreter gets far more arena than needed; it records what it used


def export_micro(model: SourceModel, profile: Profile, calibration: Dataset | None) -> Artifact:
    """Convert MODEL for TFLite Micro; the artifact is `model.tflite`, with `model_data.h/.cc`.

    Raises:
        BuildError: an op TFLite Micro lacks (named with its layer), a tensor type it cannot run,
            int8 without calibration data, or a conversion the converter rejects.
    """
    from edgepack.micro.arena import estimate_arena
    from edgepack.micro.csource import c_files
    from edgepack.micro.fit import fit, fit_failures, largest_parts, latency
    from edgepack.micro.graph import read_graph
    from edgepack.micro.host import TflmRunner, tflm_version
    from edgepack.micro.ops import check_ops, refuse_missing

    b = profile.build
    content = convert_tflite(model, b.precision, b.io_dtype, calibration)
    graph = read_graph(content)
    refuse_float_or_sparse(graph, profile.name)
    missing = check_ops(graph, model.keras_model)
    if missing:
        raise refuse_missing(missing, profile.name)

    estimate = estimate_arena(graph)
    version = tflm_version()
    if version:
        runner = TflmRunner(content, 2 * estimate.bytes + HOST_ARENA_SLACK, graph)
        arena = runner.arena()
        arena.planned_activations_bytes = estimate.activations_bytes
        host_check = {"runtime": f"tflite-micro {version}", "kernels": "reference (portable C++)"}
    else:
        runner, arena, host_check = TfliteRunner(content), estimate, None
    inputs, outputs = runner.specs()
    fitted = fit(len(content), arena.bytes, profile)
    largest = largest_parts(graph, model.keras_model)
    facts = {
        "ops": graph.op_counts(),
        "arena": arena.to_dict(),
        "fit": fitted,
        "latency": latency(graph, profile),
        "largest": largest,
        "host_check": host_check,
    }
    files = {"model.tflite": content, **c_files(content, inputs, outputs, facts, profile.name)}
    return Artifact(
        files, "model.tflite", inputs, outputs, runner.predict,
        facts={"micro": facts}, failures=fit_failures(fitted, profile.name, largest),
    )


def refuse_float_or_sparse(graph: Graph, target: str) -> None:
    """Refuse tensors TFLite Micro cannot run in a full-integer model: sparse or half-precision ones.

    The profile schema already refuses fp16, dynamic-range and sparse builds for tflite-micro;
    this catches a model that carries them anyway (a SavedModel with fp16 weights, say).
    """
    sparse = [t.name for t in graph.tensors if t.sparse]
    half = [t.name for t in graph.tensors if t.type in ("FLOAT16", "BFLOAT16")]
    if sparse or half:
        kind, names = ("sparse", sparse) if sparse else ("half-precision (fp16)", half)
        raise BuildError(
            f"target '{target}' runs TFLite Micro, which cannot run {kind} tensors: {', '.join(names[:3])}",
            hint="build a dense, full-integer int8 model: build.precision: int8, build.prune.sparsity: 0",
        )
