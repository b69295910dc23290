"""`edgepack build` for TFLite targets: every precision, pruning, the fidelity gate, the cache, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgepack.builder.pipeline import build
from edgepack.bundle import sha256_file
from edgepack.cli.app import app
from tests.conftest import build_fails_cleanly, write_target
from tests.hard_models import outlier_input_model

pytestmark = pytest.mark.slow
runner = CliRunner()


def litert_outputs(tflite_path, x: np.ndarray) -> np.ndarray:
    """Run a .tflite file with ai-edge-litert directly (not through edgepack), float in and out."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tflite_path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    results = []
    for sample in x:
        value = sample[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            value = np.clip(np.round(value / scale + zero), -128 if inp["dtype"] == np.int8 else 0, 127 if inp["dtype"] == np.int8 else 255).astype(inp["dtype"])
        it.set_tensor(inp["index"], value)
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(y[0])
    return np.array(results)


@pytest.mark.parametrize(
    "precision, io_dtype, max_err",
    [("fp32", "float32", 1e-4), ("fp16", "float32", 1e-2), ("dynamic-int8", "float32", 0.1), ("int8", "float32", 0.15), ("int8", "int8", 0.15)],
)
def test_every_precision_builds_and_runs_close_to_the_original(isolated_user_dirs, digits_files, digits, precision, io_dtype, max_err):
    import keras

    model, data = digits_files
    name = write_target(isolated_user_dirs, "pi", f"extends: raspberry-pi-4\nbuild: {{precision: {precision}, io_dtype: {io_dtype}}}\n")
    result = build(model, name, data=data)
    assert result.passed and not result.cached
    m = result.manifest
    assert m.precision == precision and m.status == "ok"
    assert m.inputs[0].dtype == ("int8" if io_dtype == "int8" else "float32")
    if io_dtype == "int8":
        assert m.inputs[0].scale and m.inputs[0].zero_point is not None

    x, _ = digits
    sample = x[1200:1300]
    expected = keras.models.load_model(model).predict(sample, verbose=0)
    got = litert_outputs(result.bundle / "model.tflite", sample)
    assert np.abs(got - expected).max() < max_err
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.97

    files = {f.path: f for f in m.files}
    assert set(files) == {"model.tflite", "reference.npz", "edgepack_runtime.py"}  # the loader for apps too
    assert files["model.tflite"].sha256 == sha256_file(result.bundle / "model.tflite")
    ref = np.load(result.bundle / "reference.npz")
    assert ref["in_0"].shape[1:] == (8, 8, 1) and ref["out_0"].shape[1:] == (10,)
    assert m.fidelity.n_samples > 300 and m.fidelity.accuracy_original > 0.9


def test_int8_is_smaller_than_fp16_which_is_smaller_than_fp32(isolated_user_dirs, digits_files):
    model, data = digits_files
    sizes = {}
    for precision in ("fp32", "fp16", "int8"):
        name = write_target(isolated_user_dirs, f"pi-{precision}", f"extends: raspberry-pi-4\nbuild: {{precision: {precision}}}\n")
        sizes[precision] = build(model, name, data=data).size_bytes
    assert sizes["int8"] < 0.35 * sizes["fp32"] and sizes["fp16"] < 0.6 * sizes["fp32"]


def test_verify_fails_a_build_whose_artifact_disagrees_and_keeps_the_bundle(isolated_user_dirs, tmp_path, digits):
    model, data = outlier_input_model(tmp_path, digits)
    name = write_target(isolated_user_dirs, "pi", "extends: raspberry-pi-4\nbuild: {fallback: off}\n")
    result = runner.invoke(app, ["build", str(model), "--target", name, "--data", str(data)])
    assert result.exit_code == 1, result.output
    assert "missed its budget: accuracy dropped" in result.output and "missed by" in result.output
    manifest = json.loads((isolated_user_dirs / "build" / "outlier-pi" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["fidelity"]["passed"] is False
    # The same model in fp32 passes: the failure is the quantization's, not the model's.
    fp32 = write_target(isolated_user_dirs, "pi32", "extends: raspberry-pi-4\nbuild: {precision: fp32}\n")
    assert runner.invoke(app, ["build", str(model), "--target", fp32, "--data", str(data)]).exit_code == 0


def test_size_budget_fails_the_build(isolated_user_dirs, digits_files):
    model, data = digits_files
    name = write_target(isolated_user_dirs, "tiny", "extends: raspberry-pi-4\nbudgets: {max_model_kb: 10}\n")
    result = build(model, name, data=data)
    assert not result.passed and any("budget 10 KB" in f for f in result.failures)


def test_an_identical_second_build_is_a_cache_hit(isolated_user_dirs, digits_files):
    model, data = digits_files
    first = build(model, "raspberry-pi-4", data=data)
    second = build(model, "raspberry-pi-4", data=data, out=isolated_user_dirs / "again")
    assert not first.cached and second.cached
    assert sha256_file(second.bundle / "model.tflite") == sha256_file(first.bundle / "model.tflite")
    assert "convert" not in second.stage_seconds
    rebuilt = build(model, "raspberry-pi-4", data=data, use_cache=False)
    assert not rebuilt.cached and "convert" in rebuilt.stage_seconds


def test_cli_build_reports_a_cache_hit(isolated_user_dirs, digits_files):
    model, data = digits_files
    args = ["build", str(model), "--target", "pixel-8", "--data", str(data), "--json"]
    first = json.loads(runner.invoke(app, args).stdout)
    second = json.loads(runner.invoke(app, args).stdout)
    assert first["cached"] is False and second["cached"] is True
    assert first["precision"] == "fp16" and first["fidelity"]["top1_agreement"] >= 0.99


def test_dry_run_prints_the_plan_and_builds_nothing(isolated_user_dirs, digits_files):
    model, data = digits_files
    write_target(isolated_user_dirs, "slim", "extends: raspberry-pi-4\nbuild: {prune: {channels: 0.25}}\n")
    result = runner.invoke(app, ["build", str(model), "--target", "slim", "--data", str(data), "--dry-run"])
    assert result.exit_code == 0
    for stage in ("load", "prune", "fine-tune", "convert", "verify", "package"):
        assert stage in result.output
    assert "calibrated on up to 200 samples" in result.output
    assert not (isolated_user_dirs / "build").exists()


def test_multi_output_keras_model_builds(isolated_user_dirs, tmp_path, digits):
    import keras

    x, y = digits
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inp))
    m = keras.Model(inp, [keras.layers.Dense(10, activation="softmax")(h), keras.layers.Dense(1)(h)])
    m.save(tmp_path / "two.keras")
    np.savez(tmp_path / "d.npz", x=x[:400], y=y[:400])
    result = build(tmp_path / "two.keras", "raspberry-pi-4", data=tmp_path / "d.npz")
    assert [o.name for o in result.manifest.outputs] == ["output_0", "output_1"]
    assert [o.shape for o in result.manifest.outputs] == [[1, 10], [1, 1]]
    assert result.manifest.fidelity.top1_agreement >= 0.97
    ref = np.load(result.bundle / "reference.npz")
    assert ref["out_0"].shape[1:] == (10,) and ref["out_1"].shape[1:] == (1,)


def test_keras2_savedmodel_with_optimizer_state_and_two_outputs_builds(isolated_user_dirs, tmp_path, digits):
    import tf_keras

    x, y = digits
    flat = x.reshape(len(x), 64)
    inp = tf_keras.Input((64,), name="features")
    h = tf_keras.layers.Dense(32, activation="relu")(inp)
    m = tf_keras.Model(inp, [tf_keras.layers.Dense(10, activation="softmax", name="digit")(h), tf_keras.layers.Dense(1, name="ink")(h)])
    m.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    m.fit(flat[:1000], [y[:1000], flat[:1000].sum(1)], epochs=5, verbose=0)
    m.save(tmp_path / "saved")  # SavedModel directory, optimizer slots included
    assert (tmp_path / "saved" / "saved_model.pb").is_file()
    np.savez(tmp_path / "d.npz", x=flat[1000:], y=y[1000:])
    for target in ("raspberry-pi-4", "pixel-8"):
        result = build(tmp_path / "saved", target, data=tmp_path / "d.npz")
        assert result.passed, result.failures
        assert result.manifest.source.kind == "savedmodel"
        assert sorted(o.name for o in result.manifest.outputs) == ["digit", "ink"]


def test_h5_model_builds(isolated_user_dirs, tmp_path, digits):
    import keras

    x, y = digits
    m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    m.save(tmp_path / "m.h5")
    np.savez(tmp_path / "d.npz", x=x[:300], y=y[:300])
    assert build(tmp_path / "m.h5", "pixel-8", data=tmp_path / "d.npz").manifest.source.kind == "keras"


def test_synthetic_calibration_is_marked_loudly(isolated_user_dirs, digits_files):
    model, _ = digits_files
    write_target(isolated_user_dirs, "loose", "extends: raspberry-pi-4\nbudgets: {max_accuracy_drop: 0.1}\n")
    result = runner.invoke(app, ["build", str(model), "--target", "loose", "--synthetic-calibration"])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output
    manifest = json.loads((isolated_user_dirs / "build" / "cnn-loose" / "manifest.json").read_text())
    assert manifest["build"]["synthetic_calibration"] is True
    assert any("SYNTHETIC" in n for n in manifest["notes"])


# --- bad input: one clear line, exit 2, no traceback, nothing written -------------------------


def test_missing_model_file(isolated_user_dirs):
    build_fails_cleanly(["nope.keras", "--target", "pixel-8"], "nope.keras: no such file or directory")


def test_corrupt_model_file(isolated_user_dirs):
    import zipfile

    (isolated_user_dirs / "broken.keras").write_bytes(b"PK\x03\x04 this is not a model")
    build_fails_cleanly(["broken.keras", "--target", "pixel-8"], "broken.keras: not a .keras file")
    with zipfile.ZipFile(isolated_user_dirs / "other.keras", "w") as z:
        z.writestr("readme.txt", "a zip, but no model in it")
    build_fails_cleanly(["other.keras", "--target", "pixel-8"], "other.keras: cannot load it as a Keras model")


def test_data_shape_mismatch_names_both_shapes(isolated_user_dirs, digits_files, digits):
    model, _ = digits_files
    x, y = digits
    np.savez(isolated_user_dirs / "flat.npz", x=x.reshape(len(x), 64), y=y)
    build_fails_cleanly([str(model), "--target", "pixel-8", "--data", "flat.npz"],
        "data x has samples of shape (64,), but model input 'image' takes (8, 8, 1)",
    )


def test_int8_without_data_is_refused(isolated_user_dirs, digits_files):
    model, _ = digits_files
    build_fails_cleanly([str(model), "--target", "raspberry-pi-4"], "needs calibration data")


def test_a_format_this_builder_cannot_make_is_refused(isolated_user_dirs, digits_files, monkeypatch):
    from edgepack.builder import convert
    from edgepack.profile.schema import Format

    monkeypatch.delitem(convert.EXPORTERS, Format.onnx)  # a format without an exporter
    model, data = digits_files
    build_fails_cleanly([str(model), "--target", "jetson-orin-nano", "--data", str(data)],
        "needs format onnx, which this edgepack cannot build yet",
    )


def test_unknown_target_is_refused_before_loading(isolated_user_dirs):
    build_fails_cleanly(["nope.keras", "--target", "pixel8"], "did you mean pixel-8")


def test_out_that_is_not_a_bundle_is_never_replaced(isolated_user_dirs, digits_files):
    model, data = digits_files
    keep = isolated_user_dirs / "important"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    build_fails_cleanly([str(model), "--target", "pixel-8", "--data", str(data), "--out", "important"], "already exists and is not a bundle")
    build_fails_cleanly([str(model), "--target", "pixel-8", "--data", str(data), "--out", "."], "is the working directory")
    assert (keep / "notes.txt").read_text() == "mine"


def test_out_with_a_foreign_manifest_json_is_never_replaced(isolated_user_dirs, digits_files):
    # A web app's (or a browser extension's) folder has a manifest.json too.
    model, data = digits_files
    app_dir = isolated_user_dirs / "w"
    (app_dir / "src").mkdir(parents=True)
    (app_dir / "manifest.json").write_text('{"name": "app"}')
    (app_dir / "src" / "app.js").write_text("x")
    before = sorted(str(p.relative_to(app_dir)) for p in app_dir.rglob("*"))
    build_fails_cleanly([str(model), "--target", "pixel-8", "--data", str(data), "--out", "w"], "its manifest.json is not an edgepack manifest")
    assert sorted(str(p.relative_to(app_dir)) for p in app_dir.rglob("*")) == before
    assert (app_dir / "src" / "app.js").read_text() == "x"


def test_a_bundle_holding_a_users_file_is_never_replaced(isolated_user_dirs, digits_files):
    model, data = digits_files
    args = [str(model), "--target", "pixel-8", "--data", str(data), "--out", "b"]
    assert runner.invoke(app, ["build", *args]).exit_code == 0
    (isolated_user_dirs / "b" / "app.py").write_text("mine")
    result = runner.invoke(app, ["build", *args])
    assert result.exit_code == 2 and "it also holds files edgepack did not write: app.py" in result.output, result.output
    assert (isolated_user_dirs / "b" / "app.py").read_text() == "mine"


def test_out_above_the_working_directory_is_refused(isolated_user_dirs, digits_files, monkeypatch):
    model, data = digits_files
    (isolated_user_dirs / "deep").mkdir()
    monkeypatch.chdir(isolated_user_dirs / "deep")
    result = runner.invoke(app, ["build", str(model), "--target", "pixel-8", "--data", str(data), "--out", ".."])
    assert result.exit_code == 2 and "is the working directory or holds it" in result.output, result.output
    assert (isolated_user_dirs / "deep").is_dir()


def test_an_earlier_bundle_at_out_is_replaced(isolated_user_dirs, digits_files):
    model, data = digits_files
    args = ["build", str(model), "--target", "pixel-8", "--data", str(data), "--out", "b", "--no-cache"]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, args).exit_code == 0
    assert sorted(p.name for p in (isolated_user_dirs / "b").iterdir()) == ["edgepack_runtime.py", "manifest.json", "model.tflite", "reference.npz"]


def test_a_file_that_is_not_a_npz_says_so(isolated_user_dirs, digits_files):
    model, _ = digits_files
    (isolated_user_dirs / "junk.npz").write_bytes(b"not a zip")
    build_fails_cleanly([str(model), "--target", "pixel-8", "--data", "junk.npz"], "junk.npz: not a .npz file")


def test_dry_run_checks_that_the_inputs_exist(isolated_user_dirs, digits_files):
    model, _ = digits_files
    build_fails_cleanly(["nothere.keras", "--target", "pixel-8", "--dry-run"], "nothere.keras: no such file")
    build_fails_cleanly([str(model), "--target", "pixel-8", "--data", "nothere.npz", "--dry-run"], "nothere.npz: no such file")


@pytest.mark.parametrize("target", ["pixel-8", "raspberry-pi-5-onnx", "jetson-orin-nano"])
def test_explain_works_for_every_quantized_kind_and_after_a_cache_hit(isolated_user_dirs, digits_files, target):
    model, data = digits_files
    args = ["build", str(model), "--target", target, "--data", str(data)]
    assert runner.invoke(app, args).exit_code == 0  # fills the cache
    result = runner.invoke(app, [*args, "--explain"])
    assert result.exit_code == 0, result.output
    assert "layers with the largest quantization error" in result.output and "no per-layer table" not in result.output


def test_labels_outside_the_models_classes_stop_the_build_before_anything_is_cached(isolated_user_dirs, digits_files, digits):
    import numpy as np

    model, _ = digits_files
    x, _ = digits
    np.savez(isolated_user_dirs / "bad.npz", x=x[:300], y=np.full(300, 57))
    build_fails_cleanly([str(model), "--target", "pixel-8", "--data", "bad.npz"], "labels y include class 57, but the model's output has 10 classes")
    from edgepack.builder.cache import cache_root

    assert not cache_root().exists() or not any(cache_root().iterdir())


def test_nan_in_the_data_stops_the_build_with_one_line(isolated_user_dirs, digits_files, digits):
    import numpy as np

    model, _ = digits_files
    x, y = digits
    x = x[:300].copy()
    x[5, 0, 0, 0] = np.nan
    np.savez(isolated_user_dirs / "nan.npz", x=x, y=y[:300])
    result = build_fails_cleanly([str(model), "--target", "raspberry-pi-4", "--data", "nan.npz"], "1 of 300 samples hold NaN or infinite values (the first is sample 5)")
    assert "internal error" not in result.output


def test_an_unwritable_out_is_one_line(isolated_user_dirs, digits_files):
    model, data = digits_files
    result = runner.invoke(app, ["build", str(model), "--target", "pixel-8", "--data", str(data), "--out", "/sys/edgepack-bundle", "--no-cache"])
    assert result.exit_code == 2, result.output
    assert "cannot write the bundle /sys/edgepack-bundle" in " ".join(result.output.split())
    assert "Traceback" not in result.output and "internal error" not in result.output
