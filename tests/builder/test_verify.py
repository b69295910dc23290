"""The fidelity check on the outputs themselves: what it refuses whatever the budgets say."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.builder.verify import compare
from edgepack.bundle import Fidelity
from edgepack.errors import DataError


def scores(n=50, classes=10, seed=0):
    x = np.random.default_rng(seed).random((n, classes)).astype(np.float32)
    return x / x.sum(1, keepdims=True)


def test_an_artifact_answering_nan_or_inf_fails_and_its_figures_read_back():
    ref = scores()
    broken = ref.copy()
    broken[3, 2] = np.inf
    broken[4, 1] = np.nan
    f = compare([ref], [broken], None, 0.01)
    assert not f.passed and f.accuracy_failed
    assert any("NaN or infinite" in failure for failure in f.failures)
    again = Fidelity.model_validate_json(f.model_dump_json())  # what the manifest holds reads back
    assert again.max_abs_error == f.max_abs_error or np.isnan(again.max_abs_error)


def test_labels_past_the_classes_the_model_answers_are_refused():
    ref = scores()
    with pytest.raises(DataError, match="labels y include class 57, but the model answers 10 classes"):
        compare([ref], [ref], np.full(50, 57), 0.01)


def test_every_output_is_judged_and_the_worst_decides():
    from edgepack.profile.schema import Verify

    rng = np.random.default_rng(1)
    classes = scores()
    boxes = rng.random((50, 4)).astype(np.float32)
    heat = rng.random((50, 8, 8, 1)).astype(np.float32)
    flat = np.full_like(heat, heat.mean())  # a broken map: one value everywhere
    names = ["label", "boxes", "heatmap"]
    f = compare([classes, boxes, heat], [classes, boxes + 1e-4, flat], None, 0.01, names, Verify(outputs={"boxes": "dense"}))
    kinds = {o.name: o.kind for o in f.outputs}
    assert kinds == {"label": "classes", "boxes": "dense", "heatmap": "dense"}
    passed = {o.name: o.passed for o in f.outputs}
    assert passed == {"label": True, "boxes": True, "heatmap": False} and not f.passed
    (failure,) = f.failures
    assert failure.startswith("heatmap differs from the original's: SQNR") and f.top1_agreement == 1.0


def test_the_dense_budget_comes_from_the_profile():
    from edgepack.profile.schema import Verify

    ref = np.random.default_rng(2).random((40, 16)).astype(np.float32)[:, :1]  # (N, 1): a regression
    noisy = ref + np.random.default_rng(3).normal(0, 0.05, ref.shape).astype(np.float32)
    assert not compare([ref], [noisy], None, 0.01).passed  # about 15 dB: under the default 20
    assert compare([ref], [noisy], None, 0.01, None, Verify(min_sqnr_db=10, min_cosine=0.9)).passed


def test_a_task_metric_from_the_profile_gates_the_build(tmp_path, monkeypatch):
    from edgepack.errors import BuildError, ProfileError
    from edgepack.profile.schema import Verify

    (tmp_path / "team_metrics.py").write_text(
        "import numpy as np\n"
        "def iou(reference, candidate, labels):\n"
        "    a, b = reference[0] > 0.5, candidate[0] > 0.5\n"
        "    return float((a & b).sum() / max((a | b).sum(), 1))\n"
        "def broken(reference, candidate, labels):\n"
        "    raise ValueError('no boxes')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = np.random.default_rng(4).random((30, 8, 8, 1)).astype(np.float32)
    f = compare([ref], [ref], None, 0.01, None, Verify(metric="team_metrics:iou", metric_min=0.9))
    assert f.passed and f.metric == 1.0
    f = compare([ref], [1 - ref], None, 0.01, None, Verify(metric="team_metrics:iou", metric_min=0.9, min_sqnr_db=-200, min_cosine=-1))
    assert not f.passed and f.failures == [f"verify.metric team_metrics:iou is {f.metric:.4g}, budget at least 0.9"]
    with pytest.raises(BuildError, match="verify.metric team_metrics:broken raised ValueError: no boxes"):
        compare([ref], [ref], None, 0.01, None, Verify(metric="team_metrics:broken", metric_max=1))
    with pytest.raises(ProfileError, match="verify.metric team_metrics:nope: cannot load it"):
        compare([ref], [ref], None, 0.01, None, Verify(metric="team_metrics:nope", metric_min=0))


def test_a_metric_needs_exactly_one_bound(isolated_user_dirs):
    from typer.testing import CliRunner

    from edgepack.cli.app import app
    from tests.conftest import write_target

    write_target(isolated_user_dirs, "m", "extends: raspberry-pi-4\nverify: {metric: 'team:iou'}\n")
    result = CliRunner().invoke(app, ["targets", "validate", "targets/m.yaml"])
    assert result.exit_code == 2 and "verify.metric needs one bound" in result.output, result.output


def test_a_metric_that_cannot_be_loaded_stops_the_build_before_any_work(isolated_user_dirs, digits_files):
    from tests.conftest import build_fails_cleanly, write_target

    model, data = digits_files
    write_target(isolated_user_dirs, "m", "extends: raspberry-pi-4\nverify: {metric: 'no_such_module:iou', metric_min: 0.5}\n")
    build_fails_cleanly([str(model), "--target", "m", "--data", str(data)], "verify.metric no_such_module:iou: cannot load it")


@pytest.mark.slow
def test_host_latency_times_both_artifacts(tmp_path, digits):
    from edgepack.builder.convert.tflite import convert_tflite, tflite_artifact
    from edgepack.builder.host_latency import compare_latency
    from edgepack.model.source import load_model
    from edgepack.profile.schema import IoDtype, Precision
    from tests.hard_models import sigmoid_map_model

    model, data = sigmoid_map_model(tmp_path, digits, break_fp16=False)
    source = load_model(model)
    x = [np.load(data)["x"][:4]]
    fp32 = tflite_artifact(convert_tflite(source, Precision.fp32, IoDtype.float32, None))
    a, b = compare_latency(fp32, fp32, x)
    assert 0 < a < 100 and 0 < b < 100


def test_an_undeclared_embedding_or_box_output_is_judged_as_dense():
    rng = np.random.default_rng(5)
    emb = rng.normal(0, 1, (60, 128)).astype(np.float32)
    noisy = emb + rng.normal(0, 0.4, emb.shape).astype(np.float32)  # about 8 dB: a broken embedding
    f = compare([emb], [noisy], None, 0.01)
    assert f.outputs[0].kind == "dense" and not f.passed


def test_a_flat_answer_cannot_hide_behind_a_per_sample_offset():
    rng = np.random.default_rng(6)
    depth = (rng.uniform(1, 30, (40, 1, 1, 1)) + rng.uniform(-0.3, 0.3, (40, 8, 8, 1))).astype(np.float32)
    flat = np.broadcast_to(depth.mean(axis=(1, 2, 3), keepdims=True), depth.shape).astype(np.float32)
    f = compare([depth], [flat], None, 0.01)
    assert not f.passed and f.outputs[0].sqnr_db < 5


def test_healthy_outputs_that_do_not_vary_pass():
    constant = np.full((30, 4), 3.0, np.float32)
    assert compare([constant], [constant + 1e-6], None, 0.01).passed
    relu = np.zeros((30, 8, 8, 2), np.float32)
    relu[:15] = np.random.default_rng(7).random((15, 8, 8, 2))  # half the maps are all zeros
    assert compare([relu], [relu + 1e-7], None, 0.01).passed


def test_declared_class_maps_are_judged_at_every_position():
    from edgepack.errors import ProfileError
    from edgepack.profile.schema import Verify

    rng = np.random.default_rng(8)
    seg = rng.random((20, 8, 8, 3)).astype(np.float32)
    zero = np.zeros_like(seg)
    zero[..., 0] = 1.0  # every pixel answered as class 0
    f = compare([seg], [zero], None, 0.01, ["seg"], Verify(outputs={"seg": "classes"}))
    assert f.outputs[0].top1_agreement < 0.5 and not f.passed
    with pytest.raises(ProfileError, match="not class scores"):
        compare([seg[:, 0, 0, :1]], [seg[:, 0, 0, :1]], None, 0.01, ["p"], Verify(outputs={"p": "classes"}))
    with pytest.raises(ProfileError, match="verify.outputs names segmentation, which the model does not have"):
        compare([seg], [seg], None, 0.01, ["seg"], Verify(outputs={"segmentation": "dense"}))


def test_host_latency_times_an_onnx_artifact_fed_integer_ids(tmp_path):
    from edgepack.builder.convert import Artifact
    from edgepack.builder.host_latency import compare_latency
    from tests.hard_models import integer_input_onnx_model

    model, data = integer_input_onnx_model(tmp_path)
    artifact = Artifact({"model.onnx": model.read_bytes()}, "model.onnx", [], [], predict=None)
    a, b = compare_latency(artifact, artifact, [np.load(data)["x"][:4]])
    assert 0 < a < 100 and 0 < b < 100
