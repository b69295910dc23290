"""The ONNX path: Keras and ONNX models built for ONNX targets at every precision, dynamic
dimensions, pruning of ONNX weights, the Jetson and Raspberry Pi ONNX profiles, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgepack.builder.pipeline import build
from edgepack.bundle import sha256_file
from edgepack.cli.app import app
from edgepack.errors import DataError, ModelError
from tests.conftest import build_fails_cleanly, write_target
from tests.builder.onnx.conftest import conv_classifier, nchw_digits

runner = CliRunner()


def ort_outputs(path, x: np.ndarray, scale=None, zero_point=None) -> np.ndarray:
    """Run an .onnx file with onnxruntime directly (not through edgepack), one sample at a time."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    node = session.get_inputs()[0]
    dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}[node.type]
    results = []
    for sample in x:
        value = sample[None]
        if scale is not None:
            info = np.iinfo(dtype)
            value = np.clip(np.round(value / scale + zero_point), info.min, info.max)
        results.append(session.run(None, {node.name: value.astype(dtype)})[0][0])
    return np.array(results, dtype=np.float32)


def ops(path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def initializer_types(path) -> set[int]:
    import onnx

    return {t.data_type for t in onnx.load(str(path)).graph.initializer if len(t.dims) >= 2}


# --- Keras -> ONNX at every precision --------------------------------------------------------


@pytest.mark.slow
# int8: a few borderline digits move by up to ~0.4 in probability (onnxruntime 1.32 QDQ, 3 of 100
# here) while the top-1 answer holds for 99%: the typical error is what must stay small.
@pytest.mark.parametrize(
    "precision, max_err, mean_err", [("fp32", 1e-4, 1e-5), ("fp16", 1e-2, 1e-3), ("int8", 0.5, 0.01), ("dynamic-int8", 0.1, 0.01)]
)
def test_keras_model_builds_onnx_at_every_precision_close_to_the_original(isolated_user_dirs, digits_files, digits, precision, max_err, mean_err):
    import keras

    model, data = digits_files
    name = write_target(isolated_user_dirs, "pi-onnx", f"extends: raspberry-pi-5-onnx\nbuild: {{precision: {precision}}}\n")
    result = build(model, name, data=data)

    assert result.passed, result.failures
    m = result.manifest
    assert (m.format, m.precision, m.artifact) == ("onnx", precision, "model.onnx")
    assert m.facts.opset == 17 and m.facts.exported_by.startswith("tf2onnx")
    assert {"onnx", "onnxruntime", "tf2onnx"} <= set(m.tools)
    assert m.inputs[0].name == "image" and m.inputs[0].dtype == "float32"  # float edges at every precision
    assert m.outputs[0].name == "output_0"
    files = {f.path: f for f in m.files}
    assert set(files) == {"model.onnx", "reference.npz", "edgepack_runtime.py"}  # the loader for apps too
    assert files["model.onnx"].sha256 == sha256_file(result.bundle / "model.onnx")

    x, _ = digits
    sample = x[1200:1300]
    expected = keras.models.load_model(model).predict(sample, verbose=0)
    got = ort_outputs(result.bundle / "model.onnx", sample)
    assert np.abs(got - expected).max() < max_err and np.abs(got - expected).mean() < mean_err
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.97
    assert m.fidelity.accuracy_drop <= 0.01 and m.fidelity.accuracy_original > 0.9

    graph_ops = ops(result.bundle / "model.onnx")
    if precision == "fp16":
        assert initializer_types(result.bundle / "model.onnx") == {10}  # float16 weights
        assert "Cast" in graph_ops  # float32 edges cast to and from float16
    if precision == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= graph_ops
        q = m.facts.onnx_quantization
        assert (q["quant_format"], q["activation_type"], q["weight_type"], q["per_channel"]) == ("QDQ", "uint8", "int8", True)
        assert "CPU" in q["why_types"] or "cpu" in q["why_types"].lower()
    if precision == "dynamic-int8":
        assert "DynamicQuantizeLinear" in graph_ops or "MatMulInteger" in graph_ops
        assert "ConvInteger" not in graph_ops  # Conv stays float: ConvInteger is slower on CPU


@pytest.mark.slow
def test_onnx_sizes_shrink_with_precision(isolated_user_dirs, digits_files):
    model, data = digits_files
    sizes = {}
    for precision in ("fp32", "fp16", "int8"):
        name = write_target(isolated_user_dirs, f"onnx-{precision}", f"extends: raspberry-pi-5-onnx\nbuild: {{precision: {precision}}}\n")
        sizes[precision] = build(model, name, data=data).size_bytes
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]
    assert sizes["fp16"] < 0.6 * sizes["fp32"] and sizes["int8"] < 0.4 * sizes["fp32"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["jetson-orin-nano", "jetson-xavier-nx"])
def test_jetson_targets_build_fp16_onnx_for_tensorrt_cuda_and_cpu_providers(isolated_user_dirs, digits_files, target):
    model, data = digits_files
    result = build(model, target, data=data)

    assert result.passed, result.failures
    m = result.manifest
    assert (m.format, m.precision) == ("onnx", "fp16")
    assert m.profile.runtime.engine.value == "onnxruntime"
    assert m.profile.runtime.providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert m.inputs[0].dtype == "float32" and m.outputs[0].dtype == "float32"  # io_dtype float32 keeps float edges
    assert initializer_types(result.bundle / "model.onnx") == {10}


@pytest.mark.slow
def test_jetson_int8_is_symmetric_int8_for_tensorrt(isolated_user_dirs, digits_files):
    import onnx
    from onnx import numpy_helper

    model, data = digits_files
    name = write_target(isolated_user_dirs, "orin-int8", "extends: jetson-orin-nano\nbuild: {precision: int8}\n")
    result = build(model, name, data=data)

    assert result.passed, result.failures
    q = result.manifest.facts.onnx_quantization
    assert (q["activation_type"], q["weight_type"], q["activation_symmetric"]) == ("int8", "int8", True)
    graph = onnx.load(str(result.bundle / "model.onnx")).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    zero_points = [consts[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # what TensorRT requires


@pytest.mark.slow
@pytest.mark.parametrize("io_dtype", ["uint8", "int8"])
def test_integer_io_dtype_makes_the_onnx_model_take_and_return_integers(isolated_user_dirs, digits_files, digits, io_dtype):
    import keras

    model, data = digits_files
    name = write_target(isolated_user_dirs, "pi-int", f"extends: raspberry-pi-5-onnx\nbuild: {{io_dtype: {io_dtype}}}\n")
    result = build(model, name, data=data)

    assert result.passed, result.failures
    inp, out = result.manifest.inputs[0], result.manifest.outputs[0]
    assert inp.dtype == out.dtype == io_dtype and inp.scale and out.scale
    x, _ = digits
    sample = x[1200:1260]
    raw = ort_outputs(result.bundle / "model.onnx", sample, inp.scale, inp.zero_point)
    got = (raw - out.zero_point) * out.scale
    expected = keras.models.load_model(model).predict(sample, verbose=0)
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.95


@pytest.mark.slow
def test_fp16_io_dtype_keeps_float16_edges(isolated_user_dirs, digits_files):
    model, data = digits_files
    name = write_target(isolated_user_dirs, "orin-f16", "extends: jetson-orin-nano\nbuild: {io_dtype: float16}\n")
    result = build(model, name, data=data)
    assert result.passed, result.failures
    assert result.manifest.inputs[0].dtype == result.manifest.outputs[0].dtype == "float16"


@pytest.mark.slow
def test_sparsity_prunes_keras_weights_before_the_onnx_export(isolated_user_dirs, digits_files):
    model, data = digits_files
    name = write_target(isolated_user_dirs, "pi-sparse", "extends: raspberry-pi-5-onnx\nbuild: {precision: fp32, prune: {sparsity: 0.5, fine_tune_epochs: 2}}\n")
    result = build(model, name, data=data)
    assert result.passed, result.failures
    assert result.manifest.build["prune_result"]["sparsity"] >= 0.49


# --- an ONNX model as input -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_onnx_model_from_tf2onnx_is_taken_as_input(isolated_user_dirs, digits_onnx, digits_files, digits, precision):
    import onnxruntime as ort

    _, data = digits_files
    name = write_target(isolated_user_dirs, "pi-onnx", f"extends: raspberry-pi-5-onnx\nbuild: {{precision: {precision}}}\n")
    result = build(digits_onnx, name, data=data)

    assert result.passed, result.failures
    m = result.manifest
    assert m.source.kind == "onnx" and m.source.sha256 == sha256_file(digits_onnx)
    assert m.source.params == 38282
    assert m.facts.source_opset == m.facts.opset == 17 and m.facts.exported_by is None
    original = ort.InferenceSession(str(digits_onnx), providers=["CPUExecutionProvider"])
    assert m.outputs[0].name == original.get_outputs()[0].name  # the ONNX graph's own names are kept
    assert any("dynamic input dimensions 'image'" in note for note in m.notes)  # the batch, reported
    x, _ = digits
    expected = original.run(None, {"image": x[1200:1300]})[0]
    got = ort_outputs(result.bundle / "model.onnx", x[1200:1300])
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.97


def test_onnx_helper_model_with_a_static_batch_of_one_builds_fp32_and_int8(isolated_user_dirs, digits, tmp_path):
    import onnx

    path = tmp_path / "static.onnx"
    onnx.save(conv_classifier(batch=1), str(path))
    x, y = nchw_digits(digits)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    for precision in ("fp32", "int8"):
        name = write_target(
            isolated_user_dirs, f"pi-{precision}",
            f"extends: raspberry-pi-5-onnx\nbuild: {{precision: {precision}}}\nbudgets: {{max_accuracy_drop: 0.2}}\n",
        )
        result = build(path, name, data=tmp_path / "data.npz")
        assert result.passed, result.failures
        assert result.manifest.inputs[0].shape == [1, 1, 8, 8]  # the model's static batch, fed one sample at a time
        assert result.manifest.fidelity.n_samples > 800
        if precision == "fp32":
            assert result.manifest.fidelity.max_abs_error < 1e-5


def test_dynamic_height_and_width_calibrate_at_the_data_size_and_stay_dynamic(isolated_user_dirs, digits, tmp_path):
    import onnx

    path = tmp_path / "detector.onnx"
    onnx.save(conv_classifier(batch="N", height="height", width="width"), str(path))
    x, y = nchw_digits(digits, 16, 24)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    name = write_target(isolated_user_dirs, "pi-det", "extends: raspberry-pi-5-onnx\nbudgets: {max_accuracy_drop: 0.2}\n")
    result = build(path, name, data=tmp_path / "data.npz")

    assert result.passed, result.failures
    assert result.manifest.inputs[0].shape == [None, 1, None, None]
    assert any("'pixels' (N, height, width)" in note and "data's size" in note for note in result.manifest.notes)
    reference = np.load(result.bundle / "reference.npz")
    assert reference["in_0"].shape[1:] == (1, 16, 24)


def test_dynamic_height_and_width_without_data_ask_for_input_shape(isolated_user_dirs, tmp_path):
    import onnx

    path = tmp_path / "detector.onnx"
    onnx.save(conv_classifier(batch="N", height="height", width="width"), str(path))
    result = build_fails_cleanly([str(path), "--target", "jetson-orin-nano"], "model input 'pixels' has dynamic dimensions (height, width)")
    assert "--input-shape pixels:1x1xNxN" in " ".join(result.output.split())
    with pytest.raises(DataError, match="without data edgepack cannot tell their size"):
        build(path, "jetson-orin-nano")


def test_input_shape_fixes_dynamic_dimensions_in_the_artifact(isolated_user_dirs, tmp_path):
    import onnx

    path = tmp_path / "detector.onnx"
    onnx.save(conv_classifier(batch="N", height="height", width="width"), str(path))
    result = runner.invoke(app, ["build", str(path), "--target", "jetson-orin-nano", "--input-shape", "pixels:1x1x32x48", "--json"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    bundle = isolated_user_dirs / summary["bundle"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == [1, 1, 32, 48]
    assert manifest["build"]["input_shapes"] == {"pixels": [1, 1, 32, 48]}
    dims = onnx.load(str(bundle / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 1, 32, 48]


def test_without_data_a_dynamic_batch_is_pinned_to_one(isolated_user_dirs, tmp_path):
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(conv_classifier(batch="batch"), str(path))
    result = build(path, "jetson-orin-nano")
    assert result.passed, result.failures
    assert result.manifest.inputs[0].shape == [1, 1, 8, 8]
    assert any("pinned to 1" in note for note in result.manifest.notes)


@pytest.mark.parametrize(
    "given, problem",
    [(["pixels:1x3"], "does not fit input 'pixels'"), (["pixel:1x1x8x8"], "did you mean pixels?"), (["pixels:1x1x0x8"], "positive sizes"),
     (["pixels:one"], "expected NAME:1x3x224x224")],
)
def test_bad_input_shape_is_refused_clearly(isolated_user_dirs, tmp_path, given, problem):
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(conv_classifier(batch="N", height="height", width="width"), str(path))
    args = [str(path), "--target", "jetson-orin-nano"]
    for g in given:
        args += ["--input-shape", g]
    build_fails_cleanly(args, problem)


def test_sparsity_prunes_onnx_initializers_without_fine_tuning(isolated_user_dirs, digits, tmp_path):
    import onnx
    from onnx import numpy_helper

    path = tmp_path / "m.onnx"
    onnx.save(conv_classifier(batch="N"), str(path))
    x, y = nchw_digits(digits)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    name = write_target(
        isolated_user_dirs, "pi-sparse",
        "extends: raspberry-pi-5-onnx\nbuild: {precision: fp32, prune: {sparsity: 0.5, fine_tune_epochs: 2}}\nbudgets: {max_accuracy_drop: 1.0}\n",
    )
    plan = runner.invoke(app, ["build", str(path), "--target", name, "--dry-run"])
    assert plan.exit_code == 0 and "no fine-tuning" in plan.output and "fine-tune" not in plan.output.replace("fine-tuning", "")

    result = build(path, name, data=tmp_path / "data.npz")
    assert result.passed, result.failures
    assert result.manifest.build["prune_result"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(result.bundle / "model.onnx")).graph.initializer}
    assert np.mean(weights["kernel"] == 0) == pytest.approx(0.5, abs=0.02)
    assert np.mean(weights["dense"] == 0) == pytest.approx(0.5, abs=0.02)
    assert not np.any(weights["bias"] == 0)  # biases are not kernels


# --- profiles ---------------------------------------------------------------------------------


def test_raspberry_pi_5_onnx_runs_int8_qdq_on_the_cpu_provider():
    from edgepack.profile.store import Catalog

    profile = Catalog().load("raspberry-pi-5-onnx").profile
    assert (profile.build.format.value, profile.build.precision.value) == ("onnx", "int8")
    assert profile.runtime.engine.value == "onnxruntime" and profile.runtime.providers == ["CPUExecutionProvider"]
    assert profile.build.onnx.activation_type.value == "auto" and profile.build.onnx.per_channel


@pytest.mark.parametrize(
    "text, problem",
    [
        ("extends: jetson\nbuild: {precision: int8, onnx: {activation_type: uint8}}\nruntime: {engine: tensorrt}\n", "symmetric int8 only"),
        ("extends: raspberry-pi-4\nbuild: {io_dtype: float16, precision: fp16}\n", "io_dtype float16 is for ONNX fp16 builds"),
        ("extends: raspberry-pi-4\nbuild: {onnx: {opset: 17}}\n", "build.onnx applies to format onnx"),
        ("extends: jetson\nruntime: {engine: tensorrt}\nbuild: {precision: dynamic-int8}\n", "cannot run precision dynamic-int8"),
    ],
)
def test_onnx_profile_contradictions_are_refused(isolated_user_dirs, text, problem):
    from edgepack.errors import ProfileError
    from edgepack.profile.store import Catalog

    write_target(isolated_user_dirs, "bad", "name: bad\n" + text)
    with pytest.raises(ProfileError) as exc:
        Catalog().load("bad")
    assert problem in "\n".join([exc.value.message, *exc.value.details])


def test_dry_run_shows_qdq_int8_for_the_raspberry_pi_onnx_target(isolated_user_dirs, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not read by the planner")
    (tmp_path / "d.npz").write_bytes(b"")
    result = runner.invoke(app, ["build", str(tmp_path / "m.onnx"), "--target", "raspberry-pi-5-onnx", "--data", str(tmp_path / "d.npz"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "onnx int8 (QDQ, minmax calibration)" in result.output


# --- bad input: one clear line, exit 2 ---------------------------------------------------------


def test_dry_run_of_an_onnx_model_for_a_tflite_target_shows_the_onnx2tf_route(isolated_user_dirs, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not read by the planner")
    (tmp_path / "d.npz").write_bytes(b"")
    result = runner.invoke(app, ["build", str(tmp_path / "m.onnx"), "--target", "raspberry-pi-4", "--data", str(tmp_path / "d.npz"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "ONNX -> SavedModel (onnx2tf), then tflite int8" in " ".join(result.output.split())


def test_channel_pruning_of_an_onnx_model_is_refused(isolated_user_dirs, tmp_path):
    import onnx

    onnx.save(conv_classifier(), str(tmp_path / "m.onnx"))
    name = write_target(isolated_user_dirs, "pi-ch", "extends: raspberry-pi-5-onnx\nbuild: {prune: {channels: 0.25}}\n")
    build_fails_cleanly([str(tmp_path / "m.onnx"), "--target", name, "--synthetic-calibration"], "prunes channels, which edgepack cannot do to an ONNX graph")


def test_corrupt_onnx_file_fails_clearly(isolated_user_dirs):
    (isolated_user_dirs / "broken.onnx").write_bytes(b"\x08\x07garbage that is not a protobuf" * 3)
    build_fails_cleanly(["broken.onnx", "--target", "jetson-orin-nano"], "broken.onnx: cannot read it as an ONNX model")


def test_onnx_model_the_checker_rejects_fails_clearly(isolated_user_dirs):
    import onnx

    model = conv_classifier()
    model.graph.node[1].input[0] = "nowhere"  # Relu reads a tensor nothing produces
    onnx.save(model, str(isolated_user_dirs / "bad.onnx"))
    build_fails_cleanly(["bad.onnx", "--target", "jetson-orin-nano"], "bad.onnx: onnx.checker rejects the model")


def test_opset_the_runtime_cannot_load_fails_clearly(isolated_user_dirs):
    import onnx
    import onnxruntime

    model = conv_classifier(opset=17)
    model.opset_import[0].version = 40  # far beyond any released opset
    onnx.save(model, str(isolated_user_dirs / "future.onnx"))
    result = build_fails_cleanly(["future.onnx", "--target", "jetson-orin-nano"], f"onnxruntime {onnxruntime.__version__} cannot load opset 40")
    assert "opset_version=17" in " ".join(result.output.split())  # how to fix it


def test_onnx_source_loads_with_the_graphs_input_names(tmp_path):
    import onnx

    from edgepack.model.source import load_model

    onnx.save(conv_classifier(), str(tmp_path / "m.onnx"))
    source = load_model(tmp_path / "m.onnx")
    assert source.kind == "onnx" and [s.name for s in source.inputs] == ["pixels"]


def test_input_shape_parser_rejects_malformed_values():
    from edgepack.model.input_shape import parse_input_shapes

    assert parse_input_shapes(["x:1x3x224x224", "'a:b':2"]) == {"x": (1, 3, 224, 224), "a:b": (2,)}
    assert parse_input_shapes(["1x8"]) == {"": (1, 8)}
    with pytest.raises(ModelError, match="twice"):
        parse_input_shapes(["x:1", "x:2"])
