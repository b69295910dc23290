"""Pruning Keras models: magnitude sparsity and channel removal, fine-tuning, pruning less where it loses too much."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from edgepack.builder.pipeline import build
from edgepack.cli.app import app
from tests.conftest import write_target

pytestmark = pytest.mark.slow
runner = CliRunner()


def weight_sparsity(tflite_path, keras_path) -> float:
    """Fraction of zeros in the artifact's Dense/Conv weight tensors, found by their shapes
    (TFLite stores a Conv kernel as (out, kh, kw, in) and a Dense kernel as (out, in))."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    shapes = set()
    for layer in keras.models.load_model(keras_path).layers:
        if hasattr(layer, "kernel"):
            k = tuple(layer.kernel.shape)
            shapes.add((k[-1], *k[:-1]))
    it = Interpreter(model_path=str(tflite_path))
    it.allocate_tensors()
    zeros = total = 0
    for d in it.get_tensor_details():
        if tuple(d["shape"]) in shapes:
            w = it.get_tensor(d["index"])
            zeros += int(np.count_nonzero(w == 0))
            total += w.size
    assert total > 0
    return zeros / total


def test_magnitude_pruning_reaches_the_requested_sparsity_in_the_artifact(isolated_user_dirs, digits_files):
    model, data = digits_files
    name = write_target(
        isolated_user_dirs, "sparse",
        "extends: raspberry-pi-4\nbuild: {prune: {sparsity: 0.6, fine_tune_epochs: 1}}\nbudgets: {max_accuracy_drop: 0.05}\n",
    )
    result = build(model, name, data=data)
    assert result.manifest.build["prune_result"]["sparsity"] >= 0.599
    assert weight_sparsity(result.bundle / "model.tflite", model) >= 0.59
    assert result.passed


def test_channel_pruning_shrinks_the_model_and_keeps_accuracy_after_fine_tuning(isolated_user_dirs, digits_files):
    model, data = digits_files
    name = write_target(
        isolated_user_dirs, "slim",
        "extends: raspberry-pi-4\nbuild: {precision: fp32, prune: {channels: 0.5, fine_tune_epochs: 5}}\n"
        "budgets: {max_accuracy_drop: 0.04}\n",
    )
    plain = build(model, write_target(isolated_user_dirs, "plain", "extends: raspberry-pi-4\nbuild: {precision: fp32}\n"), data=data)
    result = build(model, name, data=data)
    pr = result.manifest.build["prune_result"]
    assert pr["params_after"] < 0.35 * pr["params_before"]
    assert result.size_bytes < 0.4 * plain.size_bytes
    f = result.manifest.fidelity
    # Stated bound: within 4 points of the unpruned model's accuracy on held-out digits.
    assert f.accuracy_original - f.accuracy_artifact <= 0.04
    assert result.passed


def test_channel_pruning_refuses_a_branching_model_naming_the_layer(isolated_user_dirs, tmp_path, digits):
    import keras

    inp = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(8, 3, padding="same", name="left")(inp)
    b = keras.layers.Conv2D(8, 3, padding="same", name="right")(inp)
    h = keras.layers.Flatten()(keras.layers.Add(name="merge")([a, b]))
    m = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Dense(16)(h)))
    m.save(tmp_path / "branchy.keras")
    x, y = digits
    np.savez(tmp_path / "d.npz", x=x[:100], y=y[:100])
    write_target(isolated_user_dirs, "slim", "extends: raspberry-pi-4\nbuild: {precision: fp32, prune: {channels: 0.5}}\n")
    result = runner.invoke(app, ["build", str(tmp_path / "branchy.keras"), "--target", "slim", "--data", str(tmp_path / "d.npz")])
    assert result.exit_code == 2
    assert "channel pruning: layer 'right' (Conv2D) does not take the output of the layer before it" in result.output
    assert not (isolated_user_dirs / "build").exists()


def test_75_percent_sparsity_holds_accuracy_with_the_default_fine_tuning(isolated_user_dirs, digits_files, digits):
    # 300 labelled samples, the default schedule (gradual, early stopping, best weights kept).
    # One-shot pruning with 2 epochs on the same data lost 27 points here.
    import numpy as np

    model, _ = digits_files
    x, y = digits
    np.savez(isolated_user_dirs / "labelled.npz", x=x[1200:1500], y=y[1200:1500])
    np.savez(isolated_user_dirs / "eval.npz", x=x[1500:], y=y[1500:])
    name = write_target(isolated_user_dirs, "sparse", "extends: raspberry-pi-4\nbuild: {precision: fp32, prune: {sparsity: 0.75}}\n")
    result = build(model, name, data=isolated_user_dirs / "labelled.npz", eval_data=isolated_user_dirs / "eval.npz")
    f = result.manifest.fidelity
    assert result.manifest.build["prune_result"]["sparsity"] >= 0.74
    assert f.pruning.accuracy_drop <= 0.03, f.pruning
    tuned = result.manifest.build["prune_result"]["fine_tune"]
    assert tuned["held_out"] > 0 and 1 <= tuned["best_epoch"] <= tuned["epochs"] <= 30


def test_train_data_is_what_fine_tuning_learns_from(isolated_user_dirs, digits_files, digits):
    import numpy as np

    model, data = digits_files
    x, y = digits
    np.savez(isolated_user_dirs / "train.npz", x=x[:1000], y=y[:1000])
    name = write_target(isolated_user_dirs, "sparse", "extends: raspberry-pi-4\nbuild: {precision: fp32, prune: {sparsity: 0.5, fine_tune_epochs: 3}}\n")
    result = build(model, name, data=data, train_data=isolated_user_dirs / "train.npz")
    tuned = result.manifest.build["prune_result"]["fine_tune"]
    assert tuned["samples"] + tuned["held_out"] == 1000
    assert result.manifest.build["train_data"].endswith("train.npz")
    assert not any("calibration samples only" in n for n in result.manifest.notes)


def test_a_pruning_loss_is_won_back_by_pruning_less_within_the_profiles_limit(isolated_user_dirs, digits_files):
    model, data = digits_files
    name = write_target(
        isolated_user_dirs, "pruned",
        "extends: raspberry-pi-4\nbuild: {precision: fp32, prune: {sparsity: 0.95, min_sparsity: 0.5, fine_tune_epochs: 5}}\n"
        "budgets: {max_accuracy_drop: 0.03}\n",
    )
    result = build(model, name, data=data)
    reached = result.manifest.build["prune_result"]["sparsity"]
    assert result.passed and 0.49 <= reached < 0.9, (reached, result.manifest.notes)
    tries = [n for n in result.manifest.notes if n.startswith("pruning at 95% missed the gate")]
    assert tries and tries[-1].endswith("holds") and all(n.endswith("misses it too") for n in tries[:-1])


def test_min_sparsity_above_sparsity_is_refused(isolated_user_dirs):
    from edgepack.errors import ProfileError
    from edgepack.profile.store import load_target

    write_target(isolated_user_dirs, "bad", "extends: raspberry-pi-4\nbuild: {prune: {sparsity: 0.5, min_sparsity: 0.7}}\n")
    with pytest.raises(ProfileError, match="min_sparsity 0.7 is above sparsity 0.5"):
        load_target("bad")
