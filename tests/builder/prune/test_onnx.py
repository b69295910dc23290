"""Pruning an ONNX graph's weights, and the pruning step's choice of module by source format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepack.builder import prune
from edgepack.errors import BuildError
from edgepack.model.source import SourceModel
from edgepack.profile.schema import Prune
from tests.builder.onnx.conftest import conv_classifier


def onnx_source(tmp_path: Path) -> SourceModel:
    import onnx

    from edgepack.model.source import load_model

    path = tmp_path / "m.onnx"
    onnx.save(conv_classifier(batch="N"), str(path))
    return load_model(path)


def test_onnx_kernels_reach_the_sparsity_and_biases_are_left_alone(tmp_path):
    from onnx import numpy_helper

    original = onnx_source(tmp_path)
    pruned = prune.prune(original, Prune(sparsity=0.5, fine_tune_epochs=0))
    weights = {t.name: numpy_helper.to_array(t) for t in pruned.model.onnx_model.graph.initializer}
    assert np.mean(weights["kernel"] == 0) == pytest.approx(0.5, abs=0.02)
    assert np.mean(weights["dense"] == 0) == pytest.approx(0.5, abs=0.02)
    assert not np.any(weights["bias"] == 0)
    assert pruned.report.sparsity == pytest.approx(0.5, abs=0.02) and pruned.report.params_after == original.params
    before = {t.name: numpy_helper.to_array(t) for t in original.onnx_model.graph.initializer}
    assert not np.any(before["kernel"] == 0)  # the original is untouched


def test_an_onnx_graph_is_never_fine_tuned_and_its_channels_are_never_pruned(tmp_path):
    original = onnx_source(tmp_path)
    assert not prune.fine_tunes(original, Prune(sparsity=0.5, fine_tune_epochs=2))
    with pytest.raises(BuildError, match="channel pruning rebuilds Keras layers"):
        prune.prune(original, Prune(channels=0.25))


def test_a_model_without_layers_to_edit_is_refused(tmp_path):
    saved = SourceModel(tmp_path / "saved_model", "savedmodel", "0" * 64, [], [])
    with pytest.raises(BuildError, match="pruning needs a Keras model"):
        prune.prune(saved, Prune(sparsity=0.5))


def test_lower_sparsities_step_down_ten_points_to_the_floor():
    assert prune.lower_sparsities(Prune(sparsity=0.95, min_sparsity=0.5)) == [0.85, 0.75, 0.65, 0.55, 0.5]
    assert prune.lower_sparsities(Prune(sparsity=0.5)) == []
