"""The loader for apps (edgepack_runtime.py), as an app on the device uses it: no TensorFlow, no edgepack."""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgepack.agent.assemble import loader_file
from edgepack.bundle import LOADER, read_manifest

SOURCE = loader_file()  # the file copied into bundles, assembled from edgepack/ondevice/

# What a device without TensorFlow looks like to Python: importing it (or edgepack) fails.
DEVICE_ENV = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "edgepack"):
            raise ImportError("not on this device: " + name)
        return None
sys.meta_path.insert(0, Refuse())
"""

APP = DEVICE_ENV + """
import json
import numpy as np
bundle = sys.argv[1]
sys.path.insert(0, bundle)
import edgepack_runtime
model = edgepack_runtime.load(bundle)
ref = np.load(bundle + "/reference.npz")
inputs = [ref["in_%d" % i] for i in range(len(model.inputs))]
outputs = model.predict(*inputs)
one = model.predict(*[x[0] for x in inputs])  # a single sample, without its batch axis
print(json.dumps({
    "loader": edgepack_runtime.__file__, "form": model.form, "runtime": model.runtime[0],
    "errors": [float(np.abs(y - ref["out_%d" % k]).max()) for k, y in enumerate(outputs)],
    "top1": float(np.mean(np.argmax(outputs[0], -1) == np.argmax(ref["out_0"], -1))),
    "dtypes": [str(y.dtype) for y in outputs], "one": [list(y.shape) for y in one],
    "same": bool(np.array_equal(one[0], outputs[0][0])),
    "phases": sorted(model.phases_ms), "tensorflow": "tensorflow" in sys.modules or "keras" in sys.modules,
}))
"""


def run_app(script: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def import_loader(bundle: Path):
    """The bundle's own copy of the loader, imported as an app imports it (fresh, not shared with other tests)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"edgepack_runtime_{id(bundle)}", bundle / LOADER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loader_parses_as_python_38_and_imports_no_edgepack_and_no_tensorflow():
    tree = ast.parse(SOURCE.read_text(), feature_version=(3, 8))
    top_level = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            top_level.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            top_level.add((node.module or "").split(".")[0])
    assert "edgepack" not in top_level and "keras" not in top_level
    # The standard library, numpy and the runtimes: nothing a device would have to install besides.
    assert top_level - set(sys.stdlib_module_names) <= {"numpy", "ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["int8-io", "fp16", "onnx"])
def test_every_bundle_kind_loads_without_tensorflow_and_answers_like_its_reference(loader_bundles, kind):
    bundle = loader_bundles[kind]
    manifest = read_manifest(bundle)
    assert LOADER in {f.path for f in manifest.files}  # in every bundle, and checked like every file
    if kind == "int8-io":
        assert manifest.inputs[0].dtype == "int8" and manifest.outputs[0].dtype == "int8" and manifest.inputs[0].scale

    result = run_app(APP, bundle)

    assert result["loader"] == str(bundle / LOADER) and result["tensorflow"] is False
    assert result["runtime"] == ("onnxruntime" if kind == "onnx" else "ai_edge_litert") and result["form"] == "plain"
    assert result["dtypes"] == ["float32"]  # float out, int8 I/O included
    # The same runtime as the build's check: no worse than the fidelity it measured over the evaluation set.
    assert result["errors"][0] <= manifest.fidelity.max_abs_error + 1e-3
    assert result["top1"] >= 0.875
    assert result["one"] == [[10]] and result["same"]  # one sample without its batch axis: the same answer
    assert {"read_file", "allocate_tensors"} <= set(result["phases"]) if kind != "onnx" else "create_session" in result["phases"]


@pytest.mark.slow
def test_background_load_returns_at_once_and_predict_waits_for_it(loader_bundles):
    bundle = loader_bundles["onnx"]
    er = import_loader(bundle)
    x = np.load(bundle / "reference.npz")["in_0"][:2]

    # The load is held until the test lets it go: load() must return before it, predict() after it.
    release, real = threading.Event(), er.Model._load_now

    def held(self):
        assert release.wait(60)
        real(self)

    er.Model._load_now = held
    try:
        model = er.load(bundle, background=True, cache=False)
        assert model.ready() is False  # returned at once, the model still loading
        release.set()
        outputs = model.predict(x)  # waits for the thread
    finally:
        er.Model._load_now = real
    assert model.ready() is True
    assert outputs[0].shape == (2, 10) and model.load_ms > 0 and model.form == "plain"
    assert np.allclose(outputs[0].sum(-1), 1.0, atol=0.05)  # softmax scores, dequantized


def relist(bundle: Path, name: str, data: bytes) -> None:
    """Write DATA as NAME and list it in the manifest with its size and sha256, as a build would have."""
    (bundle / name).write_bytes(data)
    doc = json.loads((bundle / "manifest.json").read_text())
    for f in doc["files"]:
        if f["path"] == name:
            f.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (bundle / "manifest.json").write_text(json.dumps(doc))


def test_a_background_load_error_is_raised_on_first_predict_not_lost(tmp_path, loader_bundles):
    bundle = tmp_path / "bundle"
    shutil.copytree(loader_bundles["fp16"], bundle)
    relist(bundle, "model.tflite", b"not a flatbuffer")  # listed in the manifest: the runtime itself rejects it
    er = import_loader(bundle)

    model = er.load(bundle, background=True)
    with pytest.raises(er.LoadError, match="cannot load .*bundle"):
        model.predict(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(er.LoadError):
        model.ready()
    with pytest.raises(er.LoadError):  # and without background: raised by load itself
        er.load(bundle)


def test_cache_true_returns_the_loaded_model_and_cache_false_loads_again(loader_bundles):
    bundle = loader_bundles["fp16"]
    er = import_loader(bundle)

    first = er.load(bundle)
    again = er.load(str(bundle) + "/.", background=True)  # the same artifact, however the path is written
    fresh = er.load(bundle, cache=False)

    assert again is first and again.ready()
    assert fresh is not first and fresh.form == "plain"


def test_inputs_that_do_not_fit_and_bad_arguments_are_one_clear_error(tmp_path, loader_bundles):
    bundle = loader_bundles["int8-io"]
    er = import_loader(bundle)
    model = er.load(bundle)

    with pytest.raises(ValueError, match=r"input 0 \(.*\) has shape \[1, 7, 7, 1\]; the model takes \[1, 8, 8, 1\]"):
        model.predict(np.zeros((1, 7, 7, 1), np.float32))
    with pytest.raises(ValueError, match="takes 1 input"):
        model.predict(np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="form must be"):
        er.load(bundle, form="fastest")
    with pytest.raises(ValueError, match="needs cache=True"):
        er.load(bundle, form="optimized", cache=False)
    with pytest.raises(ValueError, match="threads must be"):
        er.load(bundle, threads=0)
    with pytest.raises(er.LoadError, match="not a bundle"):
        er.load(tmp_path)
    with pytest.raises(er.LoadError, match=r"no usable load-optimised form .*\(run `edgepack bench` on this device first\)"):
        er.load(bundle, form="optimized", cache_dir=str(tmp_path / "empty"))


def another_onnx(bundle: Path) -> bytes:
    """The bundle's ONNX model saved again with another doc string: a valid model of other bytes, which answers alike."""
    import onnx

    model = onnx.load_from_string((bundle / "model.onnx").read_bytes())
    model.doc_string = "another model"
    return model.SerializeToString()


def test_an_artifact_replaced_after_the_build_is_refused_not_loaded(tmp_path, loader_bundles):
    bundle = tmp_path / "bundle"
    shutil.copytree(loader_bundles["onnx"], bundle)
    er = import_loader(bundle)
    er.load(bundle)  # the bundle as built loads; hashed once

    (bundle / "model.onnx").write_bytes(another_onnx(bundle))

    with pytest.raises(er.LoadError, match="model.onnx does not match the manifest"):
        er.load(bundle, cache=False)
    model = er.load(bundle, background=True, cache=False)
    with pytest.raises(er.LoadError, match="does not match the manifest"):
        model.predict(np.zeros((1, 8, 8, 1), np.float32))


def test_an_artifact_outside_the_bundle_is_refused(tmp_path, loader_bundles):
    bundle = tmp_path / "bundle"
    shutil.copytree(loader_bundles["onnx"], bundle)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle / "model.onnx", outside)
    er = import_loader(bundle)
    doc = json.loads((bundle / "manifest.json").read_text())

    (bundle / "manifest.json").write_text(json.dumps(dict(doc, artifact=str(outside))))
    with pytest.raises(er.LoadError, match="named without a path"):
        er.load(bundle)

    (bundle / "manifest.json").write_text(json.dumps(doc))
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(er.LoadError, match="a link to a file outside the bundle"):
        er.load(bundle)


def test_an_app_sees_its_own_stderr_but_no_runtime_chatter(loader_bundles):
    app = DEVICE_ENV + """
bundle = sys.argv[1]
sys.path.insert(0, bundle)
import numpy as np
import edgepack_runtime
model = edgepack_runtime.load(bundle, background=True)
sys.stderr.write("the app's own line\\n")
model.predict(np.zeros((1, 8, 8, 1), np.float32))
edgepack_runtime.load(bundle, cache=False).predict(np.zeros((1, 8, 8, 1), np.float32))
"""
    proc = subprocess.run([sys.executable, "-c", app, str(loader_bundles["fp16"])], capture_output=True, text=True, timeout=300)

    assert proc.returncode == 0, proc.stderr
    assert "the app's own line" in proc.stderr
    assert "XNNPACK delegate" not in proc.stderr and "INFO:" not in proc.stderr
