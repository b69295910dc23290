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
