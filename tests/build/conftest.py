"""Small real models, trained once per test session on scikit-learn's digits."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.examples import digits_cnn, digits_data


@pytest.fixture(scope="session")
def digits():
    x, y = digits_data()
    return x, y


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory, digits):
    """The digits CNN (.keras), trained on the first 1200 digits, and the other 597 as data."""
    x, y = digits
    d = tmp_path_factory.mktemp("digits")
    digits_cnn(x[:1200], y[:1200], epochs=12).save(d / "cnn.keras")
    np.savez(d / "digits.npz", x=x[1200:], y=y[1200:])
    return d / "cnn.keras", d / "digits.npz"


def write_target(work, name: str, text: str):
    targets = work / "targets"
    targets.mkdir(exist_ok=True)
    (targets / f"{name}.yaml").write_text(text)
    return name
