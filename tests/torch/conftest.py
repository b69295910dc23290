"""Fixtures for models from other frameworks: the onnx2tf environment, digits as NCHW, a PyTorch digits CNN."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# The user cache as it is outside the tests (each test gets an empty one): onnx2tf's environment
# takes minutes and 2-3 GB to create, so the suite makes it once, where a user's edgepack would.
REAL_CACHE = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")


@pytest.fixture(scope="session")
def onnx2tf_python():
    """The Python of onnx2tf's environment (created on first use); the test skips where it cannot be made."""
    from edgepack.model import onnx_tflite
    from edgepack.errors import BuildError

    given = os.environ.get("EDGEPACK_ONNX2TF_PYTHON")
    if given:
        return given
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = REAL_CACHE
    try:
        return str(onnx_tflite.onnx2tf_python())
    except BuildError as exc:
        pytest.skip(f"onnx2tf's environment cannot be created here: {exc.message}")
    finally:
        if saved is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = saved


@pytest.fixture
def onnx2tf(onnx2tf_python, monkeypatch):
    monkeypatch.setenv("EDGEPACK_ONNX2TF_PYTHON", onnx2tf_python)
    return onnx2tf_python


@pytest.fixture(scope="session")
def digits_nchw(tmp_path_factory, digits):
    """The digits as PyTorch takes images: x float32 (N, 1, 8, 8); train on the first 1200, the rest in digits.npz."""
    x, y = digits
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    path = tmp_path_factory.mktemp("digits-nchw") / "digits.npz"
    np.savez(path, x=x[1200:], y=y[1200:])
    return x, y, path


@pytest.fixture(scope="session")
def torch_digits(tmp_path_factory, digits_nchw):
    """The PyTorch digits CNN trained on the first 1200 digits: (model.pt2, weights.pt, held-out digits.npz)."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'edgepack[torch]')")
    from tests.torch.digits_torch import train_digits_net

    x, y, data = digits_nchw
    net = train_digits_net(x[:1200], y[:1200])
    d = tmp_path_factory.mktemp("torch-digits")
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, (torch.from_numpy(x[:2]),), dynamic_shapes=({0: batch},))
    torch.export.save(program, d / "digits.pt2")
    torch.save(net.state_dict(), d / "weights.pt")
    return d / "digits.pt2", d / "weights.pt", data


@pytest.fixture(scope="session")
def digits_onnx_nhwc(tmp_path_factory, digits_files):
    """The digits CNN trained on the first 1200 digits, exported to ONNX (tf2onnx) as a user would."""
    import keras
    import tensorflow as tf
    import tf2onnx

    model = keras.models.load_model(digits_files[0])
    spec = [tf.TensorSpec((None, 8, 8, 1), tf.float32, name="image")]
    function = tf.function(lambda image: {"scores": model(image, training=False)})
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=17)
    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    path.write_bytes(proto.SerializeToString())
    return path, digits_files[1]
