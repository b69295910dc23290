"""Detector-shaped ONNX models (U-Net-like, ConvTranspose head, sigmoid map, Constant weights,
dynamic dims, opset 12) whose plain int8 and plain fp16 builds miss the dense gate: recovery keeps
the precision asked for, the working directory is left as it was, and the comparisons of every
intermediate tensor stay in bounded memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgepack.builder.pipeline import build
from tests.conftest import write_target
from tests.onnx_detectors import blob_images, detector

SIZE = 64
WIDTH = 0.25


@pytest.fixture()
def detector_files(isolated_user_dirs, tmp_path):
    import onnx

    model, data = tmp_path / "detector.onnx", tmp_path / "data.npz"
    onnx.save(detector(WIDTH), str(model))
    np.savez(data, x=blob_images(48, SIZE))
    return model, data


def entries(folder) -> set[str]:
    return {p.name for p in folder.rglob("*")}


@pytest.mark.slow
@pytest.mark.parametrize("target, precision", [("raspberry-pi-5-onnx", "int8"), ("orin-int8", "int8")])
def test_detector_that_plain_quantization_breaks_is_recovered_at_the_requested_precision(isolated_user_dirs, detector_files, tmp_path, target, precision):
    model, data = detector_files
    if target == "orin-int8":
        write_target(isolated_user_dirs, target, "extends: jetson-orin-nano\nbuild: {precision: int8}\n")
    before = entries(isolated_user_dirs)

    result = build(model, target, data=data, out=tmp_path / "bundle", use_cache=False)

    quant = result.manifest.facts.quantization
    assert not quant.attempts[0]["passed"]  # the plain build misses the dense gate
    assert result.passed, result.failures
    assert result.manifest.precision.value == precision  # not fp32
    assert quant.strategy != "plain" and quant.attempts[-1]["float_layers"]  # a few nodes kept in float
    fp32 = model.stat().st_size
    assert result.size_bytes <= 0.45 * fp32
    assert result.manifest.peak_rss_mb and result.manifest.peak_rss_mb > 0
    assert entries(isolated_user_dirs) == before  # no scratch files left


def fidelity_db(reference, candidate, x) -> float:
    import onnxruntime as ort

    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0].astype(np.float64)  # noqa: E731
    r, c = run(reference), run(candidate)
    return float(10 * np.log10(np.sum(r**2) / max(np.sum((r - c) ** 2), 1e-30)))


@pytest.mark.slow
def test_detector_that_the_plain_fp16_converter_breaks_ships_fp16_within_the_gate(isolated_user_dirs, detector_files, tmp_path):
    import onnx
    from onnxconverter_common import float16

    from edgepack.builder.convert.onnx_quant import constants_to_initializers

    model, data = detector_files
    proto, _ = constants_to_initializers(onnx.load(str(model)))
    plain = float16.convert_float_to_float16(proto, keep_io_types=True)  # the plain converter: dec1's weights pass 65504
    assert fidelity_db(proto, plain, blob_images(4, SIZE)) < 20
    before = entries(isolated_user_dirs)

    result = build(model, "jetson-orin-nano", data=data, out=tmp_path / "bundle", use_cache=False)

    assert result.passed, result.failures
    assert result.manifest.precision.value == "fp16"
    assert "dec1" in result.manifest.facts.fp16["fp32_nodes"]
    assert result.size_bytes <= 0.65 * model.stat().st_size
    assert entries(isolated_user_dirs) == before


def test_fp16_keeps_in_fp32_the_nodes_whose_activations_pass_its_range_on_the_data():
    # Every weight is within float16's range; a gain makes one channel reach about 3e5 on the
    # data. onnxruntime's CPU provider computes these ops in fp32, so only the float model's own
    # ranges show it: the nodes that make and read that tensor stay in fp32.
    from edgepack.builder.convert.onnx_fp16 import fp16_with_checks, past_fp16_range
    from edgepack.model.data import Dataset
    from edgepack.profile.schema import IoDtype

    model = detector(WIDTH, gain=True)
    assert past_fp16_range(model) == []
    half, facts = fp16_with_checks(model, IoDtype.float32, Dataset([blob_images(8, SIZE)]))
    assert "dec1_gain" in facts["activations_past_range"]
    assert {"dec1_gain", "head_up"} <= set(facts["fp32_for_activations"])
    producers = {o: n for n in half.graph.node for o in n.output}
    for node in [n for n in half.graph.node if n.name in ("dec1_gain", "head_up")]:
        feed = producers[node.input[0]]  # the converter's Cast to float32, or a node kept in fp32 itself
        assert (feed.op_type == "Cast" and feed.attribute[0].i == 1) or feed.name in ("dec1_gain", "head_up"), (node.name, feed.op_type)
        assert any(o.endswith("_output_cast_0") for o in node.output)  # and cast back to float16 for the nodes after it


@pytest.mark.slow
def test_int8_build_quantizes_constant_weights_and_upgrades_an_old_opset(isolated_user_dirs, detector_files):
    import onnx

    model, data = detector_files
    result = build(model, "raspberry-pi-5-onnx", data=data, use_cache=False)

    q = result.manifest.facts.onnx_quantization
    assert q["constants_to_initializers"] > 0 and q["per_channel"]
    graph = onnx.load(str(result.bundle / "model.onnx")).graph
    assert {o.version for o in onnx.load(str(result.bundle / "model.onnx")).opset_import if o.domain in ("", "ai.onnx")} == {13}
    weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(weights) >= 10  # the Conv / ConvTranspose kernels are int8


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_onnx_builds_leave_the_working_directory_unchanged(isolated_user_dirs, tmp_path, precision):
    import onnx

    model, data = tmp_path / "small.onnx", tmp_path / "data.npz"
    onnx.save(detector(0.15), str(model))
    np.savez(data, x=blob_images(16, 32))
    name = write_target(isolated_user_dirs, f"plain-{precision}", f"extends: raspberry-pi-5-onnx\nbuild: {{precision: {precision}, fallback: off}}\n")
    before = entries(isolated_user_dirs)

    result = build(model, name, data=data, out=tmp_path / "bundle", use_cache=False)

    assert result.bundle == tmp_path / "bundle"
    assert entries(isolated_user_dirs) == before


PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from edgepack.builder.convert.onnx_fp16 import to_fp16
    from edgepack.builder.memory import peak_rss_mb
    from edgepack.builder.streaming import compare_graphs, float_tensors
    from edgepack.model.data import Dataset
    from edgepack.profile.schema import IoDtype
    from tests.onnx_detectors import blob_images, detector

    size, n = int(sys.argv[1]), int(sys.argv[2])
    fp32 = detector(0.25)
    fp16 = to_fp16(fp32, IoDtype.float32)
    data = Dataset([blob_images(n, size)])
    compare_graphs(fp32, fp16, data.take(np.arange(2)))  # sessions and imports: what any run costs
    base = peak_rss_mb()
    stats = compare_graphs(fp32, fp16, data)
    assert stats and all(s.count for s in stats.values())
    # every activation of every sample, of both graphs, in float64 (what collecting them would hold)
    probe = compare_graphs(fp32, fp32, data.take(np.arange(1)))
    collected = 2 * n * sum(s.count for s in probe.values()) * 8 / 2**20
    print(peak_rss_mb() - base, collected)
    """
)


@pytest.mark.slow
def test_comparing_every_tensor_of_two_graphs_stays_far_below_collecting_every_activation(tmp_path):
    import os

    script = tmp_path / "peak.py"
    script.write_text(PEAK_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, str(script), "128", "32"], capture_output=True, text=True, env=env, timeout=600, check=True)

    growth_mb, collected_mb = map(float, out.stdout.split())
    assert collected_mb > 400  # large enough that holding every activation would show
    assert growth_mb < collected_mb / 10


def test_comparing_graphs_whose_batch_is_pinned_to_one_runs_a_sample_at_a_time():
    # --input-shape x:1x3x64x64 pins the batch: every comparison (explanation, recovery, the fp16
    # overflow check) must feed that graph one sample at a time, not its usual batch.
    from edgepack.builder.streaming import compare_graphs, tensor_ranges
    from edgepack.model.data import Dataset
    from edgepack.model.onnx_graph import graph_inputs, set_input_shapes

    fp32 = detector(0.25)
    pinned = set_input_shapes(fp32, {graph_inputs(fp32)[0].name: (1, 3, 64, 64)})
    data = Dataset([blob_images(3, 64)])
    stats = compare_graphs(pinned, pinned, data)
    assert stats and all(s.comparable and s.count > 0 for s in stats.values())
    assert all(s.sqnr_db == 150.0 for s in stats.values())
    assert max(tensor_ranges(pinned, data).values()) > 0
