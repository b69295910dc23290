"""ONNX -> TensorFlow SavedModel with onnx2tf, for the TFLite and microcontroller targets.

onnx2tf pins exact versions of numpy, onnx, onnxruntime and TensorFlow that differ from
edgepack's own, so it runs in an environment of its own: created once, on first use, under the
user cache directory (`converters/onnx2tf-<version>`), and called as a subprocess. It writes a
SavedModel whose input keeps the ONNX model's NCHW layout; edgepack's own TFLite converter then
takes that SavedModel as it takes any other, so int8 calibration, fp16, TFLite Micro, the fidelity
gate and recovery are the same as for a Keras source. The SavedModel is written once per graph
into a temporary directory that lives as long as the process.

`EDGEPACK_ONNX2TF_PYTHON` names an interpreter that already has onnx2tf (offline machines, CI).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgepack.errors import BuildError

ONNX2TF_VERSION = "1.29.24"
ONNX_TARGETS = "ONNX targets run it (the jetson family, raspberry-pi-5-onnx)"
ROUTE_NOTE = (
    f"converted ONNX -> TensorFlow SavedModel with onnx2tf {ONNX2TF_VERSION} (in its own environment), then to TFLite; "
    "the TFLite model takes batch 1 (TFLite runs one sample at a time)"
)
ENV_TIMEOUT_S = 1800
CONVERT_TIMEOUT_S = 1800
_converted: dict[str, Path | BuildError] = {}  # graph sha256 -> SavedModel directory, or why it failed
_workdir: list[Path] = []
_loaded: dict[Path, object] = {}  # SavedModel directory -> the loaded SavedModel (its variables outlive the converter)

# Runs inside the onnx2tf environment: argv = model.onnx, output folder, input names to keep in NCHW.
# The batch is fixed at 1: TFLite runs one sample at a time, TFLite Micro needs static shapes, and
# the shape arithmetic a dynamic batch leaves (Shape -> Gather on int64) has no TFLite Micro kernel.
DRIVER = r"""
import json, sys, traceback
model, out, keep, shapes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
import onnx2tf
try:
    onnx2tf.convert(
        input_onnx_file_path=model, output_folder_path=out, output_signaturedefs=True,
        keep_ncw_or_nchw_or_ncdhw_input_names=keep or None, copy_onnx_input_output_names_to_tflite=True,
        overwrite_input_shape=shapes or None, disable_model_save=False, non_verbose=True, verbosity="error",
    )
except BaseException as exc:
    node = getattr(exc, "onnx_op_name", None)
    print("EDGEPACK-FAILURE " + json.dumps({"node": node, "error": f"{type(exc).__name__}: {exc}"[:400]}), flush=True)
    sys.exit(3)
"""


def env_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("edgepack")) / "converters" / f"onnx2tf-{ONNX2TF_VERSION}"


def onnx2tf_python() -> Path:
    """The interpreter of onnx2tf's own environment, created (minutes, once) where it is missing.

    Raises:
        BuildError: the environment could not be created (no network, no venv module).
    """
    given = os.environ.get("EDGEPACK_ONNX2TF_PYTHON")
    if given:
        return Path(given)
    home = env_dir()
    python = home / "bin" / "python"
    if (home / "READY").is_file():
        return python
    home.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=home.name + ".", dir=home.parent))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(work)], check=True, capture_output=True, timeout=ENV_TIMEOUT_S)
        pip = [str(work / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", f"onnx2tf=={ONNX2TF_VERSION}"]
        done = subprocess.run(pip, capture_output=True, text=True, timeout=ENV_TIMEOUT_S)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise BuildError(
                f"cannot install onnx2tf {ONNX2TF_VERSION} (the ONNX -> TFLite converter) into {home}: {last[:200]}",
                hint="check the network, or set EDGEPACK_ONNX2TF_PYTHON to a Python that has onnx2tf",
            )
        (work / "READY").write_text(ONNX2TF_VERSION + "\n")
        try:
            work.rename(home)
        except OSError:  # another build made it meanwhile
            pass
    except subprocess.SubprocessError as exc:
        raise BuildError(f"cannot create the onnx2tf environment in {home}: {exc}", hint="set EDGEPACK_ONNX2TF_PYTHON to a Python that has onnx2tf") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return python


def tflite_converter(proto, what: str, inputs: list[str], outputs: list[str]):
    """A `tf.lite.TFLiteConverter` for the ONNX graph PROTO, whose signature keeps the graph's input and output names.

    onnx2tf names the SavedModel's outputs output_0, output_1, ...; a wrapping function gives them
    back their ONNX names (the names the fidelity gate and the manifest use).

    Raises:
        BuildError: see `saved_model_for`.
    """
    import tensorflow as tf

    saved = saved_model_for(proto, what)
    loaded = _loaded.get(saved)
    if loaded is None:
        loaded = _loaded[saved] = tf.saved_model.load(str(saved))
    signature = loaded.signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    keys = _match(inputs, list(specs))
    out_keys = _match(outputs, sorted(signature.structured_outputs, key=_index))
    wanted = [tf.TensorSpec(_batch_one(specs[k].shape), specs[k].dtype, name=name) for name, k in zip(inputs, keys)]

    @tf.function(input_signature=wanted)
    def model(*xs):
        result = signature(**{k: x for k, x in zip(keys, xs)})
        return {name: result[k] for name, k in zip(outputs, out_keys)}

    return tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], loaded)


def _batch_one(shape) -> list:
    """Batch 1 where the batch is the only unknown: the converter then folds the shape arithmetic away."""
    dims = list(shape.as_list()) if shape.rank is not None else []
    if dims and dims[0] is None and all(d is not None for d in dims[1:]):
        dims[0] = 1
    return dims if shape.rank is not None else None


def _index(key: str) -> tuple[int, str]:
    found = re.search(r"(\d+)$", key)
    return (int(found.group(1)) if found else -1, key)


def _match(names: list[str], keys: list[str]) -> list[str]:
    """Each ONNX name's key in the SavedModel signature: the same name, the name as onnx2tf sanitizes it, else by position."""
    matched = []
    for i, name in enumerate(names):
        clean = re.sub(r"[^A-Za-z0-9_]", "_", name)
        found = next((k for k in keys if k in (name, clean, clean.lstrip("_"))), None)
        matched.append(found if found is not None else keys[i])
    return matched


def saved_model_for(proto, what: str) -> Path:
    """Convert the ONNX graph PROTO to a SavedModel (once per graph); return its directory.

    Raises:
        BuildError: an op or node onnx2tf cannot convert: the op, the node and the module it came
            from, and that the ONNX targets run the model.
    """
    content = proto.SerializeToString()
    key = hashlib.sha256(content).hexdigest()
    done = _converted.get(key)
    if isinstance(done, BuildError):
        raise done
    if done is not None and (done / "saved_model.pb").is_file():
        return done
    try:
        _converted[key] = convert(proto, content, what, _scratch() / key)
    except BuildError as exc:
        _converted[key] = exc
        raise
    return _converted[key]


def _scratch() -> Path:
    if not _workdir:
        _workdir.append(Path(tempfile.mkdtemp(prefix="edgepack-onnx2tf-")))
        atexit.register(shutil.rmtree, _workdir[0], True)
    return _workdir[0]


def convert(proto, content: bytes, what: str, out: Path) -> Path:
    """Run onnx2tf on CONTENT into OUT (a SavedModel); 4-D inputs keep their NCHW layout."""
    python = onnx2tf_python()
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model.onnx"
    model.write_bytes(content)
    from edgepack.model.onnx_graph import graph_inputs

    keep = [v.name for v in graph_inputs(proto) if len(v.type.tensor_type.shape.dim) in (3, 4, 5)]
    shapes = []
    for v in graph_inputs(proto):
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in v.type.tensor_type.shape.dim]
        if dims and all(d is not None for d in dims[1:]):
            shapes.append(f"{v.name}:" + ",".join(str(d) for d in [1, *dims[1:]]))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    try:
        done = subprocess.run(
            [str(python), "-c", DRIVER, str(model), str(out / "saved_model"), json.dumps(keep), json.dumps(shapes)],
            capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=env, cwd=out,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: onnx2tf did not finish in {CONVERT_TIMEOUT_S} s", hint=f"build for an ONNX target instead: {ONNX_TARGETS}") from None
    saved = out / "saved_model"
    if done.returncode == 0 and (saved / "saved_model.pb").is_file():
        model.unlink()
        return saved
    raise conversion_error(proto, done.stdout + "\n" + done.stderr, what)


def conversion_error(proto, log: str, what: str) -> BuildError:
    """One line from onnx2tf's failure: the op, the node, the module it came from, and the targets that take the model."""
    found = re.search(r"EDGEPACK-FAILURE (\{.*\})", log)
    failure = json.loads(found.group(1)) if found else {"node": None, "error": _last_line(log)}
    nodes = {n.name: n for n in proto.graph.node}
    node = nodes.get(failure.get("node") or "") or _node_named_in(failure["error"], proto)
    missing = re.search(r"No module named 'onnx2tf\.ops\.(\w+)'", failure["error"])
    op = missing.group(1) if missing else (node.op_type if node is not None else None)
    if node is None and op:
        node = next((n for n in proto.graph.node if n.op_type == op), None)
    where = ""
    if node is not None:
        from edgepack.model.torch_source import source_names

        module = source_names(proto).get(node.name)
        where = f" at node '{node.name}'" + (f" (module {module})" if module else "")
    reason = "onnx2tf has no conversion for it" if missing else failure["error"][:200]
    return BuildError(
        f"{what}: the TFLite converter cannot lower op {op or '?'}{where} (onnx2tf: {reason}); {ONNX_TARGETS}",
        hint="build for an ONNX target, or replace the op in the model",
    )


def _node_named_in(message: str, proto):
    for n in proto.graph.node:
        if n.name and n.name in message:
            return n
    return None


def _last_line(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "onnx2tf failed without a message"
