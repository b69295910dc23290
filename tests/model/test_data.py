"""Data is checked before it can mislead the fidelity gate: finite values, numbers, labels that are the model's classes."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.errors import DataError
from edgepack.model.data import load_data
from edgepack.model.source import TensorInfo

INPUTS = [TensorInfo("image", (None, 8, 8, 1), "float32")]
OUTPUTS = [TensorInfo("output_0", (None, 10), "float32")]


def npz(tmp_path, x, y=None):
    path = tmp_path / "d.npz"
    np.savez(path, **({"x": x} if y is None else {"x": x, "y": y}))
    return path


def images(n=20):
    return np.random.default_rng(0).random((n, 8, 8, 1), dtype=np.float32)


def test_integer_labels_within_the_classes_load(tmp_path):
    data = load_data(npz(tmp_path, images(), np.arange(20) % 10), INPUTS, OUTPUTS)
    assert data.y.dtype == np.int64 and data.y.max() == 9 and "labels" not in data.notes


@pytest.mark.parametrize(
    ("y", "expected"),
    [
        (np.full(20, 57), "labels y include class 57, but the model's output has 10 classes (0..9)"),
        (np.arange(20) % 10 - 1, "labels y include -1: classes are numbered from 0"),
        (np.linspace(0, 9, 20), "labels y are fractional or not finite"),
        (np.array(["cat"] * 20), "labels y are <U3 values"),
        (np.zeros((20, 3, 2)), "labels y have shape (20, 3, 2)"),
    ],
)
def test_labels_that_are_not_the_models_classes_are_refused(tmp_path, y, expected):
    with pytest.raises(DataError) as raised:
        load_data(npz(tmp_path, images(), y), INPUTS, OUTPUTS)
    assert expected in raised.value.message and raised.value.hint


def test_whole_number_float_labels_become_integers(tmp_path):
    data = load_data(npz(tmp_path, images(), (np.arange(20) % 10).astype(np.float32)), INPUTS, OUTPUTS)
    assert data.y.dtype == np.int64 and list(data.y[:3]) == [0, 1, 2]


def test_one_hot_labels_are_converted_with_a_note(tmp_path):
    y = np.eye(10, dtype=np.float32)[np.arange(20) % 10]
    data = load_data(npz(tmp_path, images(), y), INPUTS, OUTPUTS)
    assert list(data.y[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert data.notes["labels"] == "one-hot labels (10 columns) converted to class indices"


def test_one_hot_labels_for_other_classes_are_refused(tmp_path):
    with pytest.raises(DataError, match="one-hot labels y have 4 classes, but the model's output has 10"):
        load_data(npz(tmp_path, images(), np.eye(4)[np.arange(20) % 4]), INPUTS, OUTPUTS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_inputs_are_refused_naming_the_first_sample(tmp_path, bad):
    x = images()
    x[3, 0, 0, 0] = bad
    x[7, 1, 1, 0] = bad
    with pytest.raises(DataError) as raised:
        load_data(npz(tmp_path, x), INPUTS, OUTPUTS)
    assert "2 of 20 samples hold NaN or infinite values (the first is sample 3)" in raised.value.message


def test_all_nan_data_is_refused(tmp_path):
    with pytest.raises(DataError, match="20 of 20 samples hold NaN"):
        load_data(npz(tmp_path, np.full((20, 8, 8, 1), np.nan, dtype=np.float32)), INPUTS, OUTPUTS)


def test_empty_data_is_refused(tmp_path):
    with pytest.raises(DataError, match="the data has no samples"):
        load_data(npz(tmp_path, np.zeros((0, 8, 8, 1), dtype=np.float32)), INPUTS, OUTPUTS)


def test_non_numeric_inputs_are_refused(tmp_path):
    with pytest.raises(DataError, match="data is <U1 but model input 'image' takes float32"):
        load_data(npz(tmp_path, np.full((20, 8, 8, 1), "a")), INPUTS, OUTPUTS)
    ints = [TensorInfo("tokens", (None, 4), "int32")]
    with pytest.raises(DataError, match="holds <U1 values, not numbers"):
        load_data(npz(tmp_path, np.full((20, 4), "a")), ints)


def test_labels_for_an_output_that_is_not_class_scores_are_set_aside_with_a_note(tmp_path):
    sigmoid = [TensorInfo("p", (None, 1), "float32")]
    data = load_data(npz(tmp_path, images(), np.arange(20) % 2), INPUTS, sigmoid)
    assert data.y is None and "labels set aside" in data.notes["labels"]
    regression = [TensorInfo("value", (None,), "float32")]
    data = load_data(npz(tmp_path, images(), np.linspace(0, 1, 20)), INPUTS, regression)
    assert data.y is None


def test_column_labels_are_taken_as_one_label_per_sample(tmp_path):
    data = load_data(npz(tmp_path, images(), (np.arange(20) % 10)[:, None]), INPUTS, OUTPUTS)
    assert data.y.shape == (20,) and data.y[3] == 3


def test_a_single_label_value_is_refused(tmp_path):
    with pytest.raises(DataError, match="y is a single value"):
        load_data(npz(tmp_path, images(), np.int64(3)), INPUTS, OUTPUTS)


def test_values_that_overflow_the_models_float_type_are_refused(tmp_path):
    x = images().astype(np.float64)
    x[4, 0, 0, 0] = 1e300  # finite in float64, inf in the model's float32
    with pytest.raises(DataError, match="1 of 20 samples hold NaN or infinite values"):
        load_data(npz(tmp_path, x), INPUTS, OUTPUTS)


@pytest.mark.parametrize("value", [1e38, -3e10])
def test_huge_finite_values_are_refused_naming_the_range(tmp_path, value):
    x = images()
    x[3, 0, 0, 0] = value
    with pytest.raises(DataError) as exc:
        load_data(npz(tmp_path, x), INPUTS)
    assert "1 of 20 samples hold values beyond ±1e+09 (the first is sample 3" in exc.value.message
    assert "±1e+09" in exc.value.hint


def test_values_up_to_the_range_load(tmp_path):
    x = images() * 1e9
    assert load_data(npz(tmp_path, x), INPUTS).x[0].max() <= 1e9
