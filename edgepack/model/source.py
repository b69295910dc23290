"""Load the user's trained model: Keras (.keras, .h5), a TensorFlow SavedModel directory, ONNX, or
PyTorch (a `torch.export` .pt2 file, or `pkg.module:factory` returning an nn.Module).

A `SourceModel` runs the original model (the reference for verification), describes its
inputs and outputs, and hands the TFLite converter what it needs. TensorFlow is imported
inside the functions that use it; ONNX models run with onnxruntime (`edgepack.model.onnx_graph`),
PyTorch models in PyTorch (`edgepack.model.torch_source`), which also exports them to ONNX. An ONNX
graph (given, or exported from PyTorch) reaches the TFLite converter through onnx2tf
(`edgepack.model.onnx_tflite`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgepack.bundle import sha256_file
from edgepack.errors import ModelError, first_line

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[Optional[int], ...]  # None for a dynamic dimension (the batch, usually)
    dtype: str


@dataclass
class SourceModel:
    """A loaded model. Outputs are named output_0, output_1, ... for Keras models (the names the
    TFLite converter gives them), by their signature keys for SavedModels and by the graph's
    output names for ONNX models."""

    path: Path
    kind: str  # "keras", "savedmodel", "onnx" or "pytorch"
    sha256: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    keras_model: Any = None  # a keras.Model, when there is one (needed to prune)
    signature: Any = None  # the SavedModel's serving function
    _keep: list = field(default_factory=list, repr=False)  # objects the signature needs alive
    onnx_model: Any = None  # the onnx.ModelProto of an ONNX source
    dim_names: dict[str, tuple[Optional[str], ...]] = field(default_factory=dict)  # ONNX: input -> symbolic dim names
    _runner: Any = field(default=None, repr=False)
    torch_program: Any = None  # the torch.export.ExportedProgram of a PyTorch source (its ONNX export is onnx_model)
    load_notes: list[str] = field(default_factory=list)  # what loading decided that the user should know

    @property
    def params(self) -> int | None:
        if self.onnx_model is not None:
            return int(sum(np.prod(t.dims, dtype=np.int64) for t in self.onnx_model.graph.initializer if t.data_type in (1, 10, 11)))
        return int(self.keras_model.count_params()) if self.keras_model is not None else None

    def dynamic_inputs(self) -> dict[str, list[str]]:
        """Input name -> the names of its dynamic dimensions (None in the shape), for inputs that have any."""
        found = {}
        for spec in self.inputs:
            names = self.dim_names.get(spec.name) or ()
            dynamic = [names[i] if i < len(names) and names[i] else f"dim{i}" for i, d in enumerate(spec.shape) if d is None]
            if dynamic:
                found[spec.name] = dynamic
        return found

    def predict(self, xs: list[np.ndarray], batch_size: int = 64) -> list[np.ndarray]:
        """Run the model on inputs (one array per input, batch first); return one array per output."""
        n = len(xs[0])
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, batch_size):
            batch = [x[start : start + batch_size] for x in xs]
            chunks.append(self._run(batch))
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(self.outputs))]

    def _run(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        if self._runner is not None and self.torch_program is not None:  # PyTorch itself (a pruned copy has no runner)
            return self._runner.predict(batch)
        if self.onnx_model is not None:
            if self._runner is None:
                from edgepack.model.onnx_graph import OnnxRunner

                self._runner = OnnxRunner(self.onnx_model, str(self.path))
            return self._runner.predict(batch, [s.name for s in self.inputs], [s.name for s in self.outputs])
        if self.keras_model is not None:
            out = self.keras_model(batch if len(batch) > 1 else batch[0], training=False)
            out = out if isinstance(out, (list, tuple)) else [out]
            return [np.asarray(o) for o in out]
        import tensorflow as tf

        kwargs = {spec.name: tf.constant(x, dtype=spec.dtype) for spec, x in zip(self.inputs, batch)}
        result = self.signature(**kwargs)
        return [result[o.name].numpy() for o in self.outputs]

    def tflite_converter(self):
        """Return a `tf.lite.TFLiteConverter` for this model.

        An ONNX graph (an ONNX source, or a PyTorch source's export) is first converted to a
        SavedModel by onnx2tf, in an environment of its own.

        Raises:
            BuildError: an ONNX graph with an op onnx2tf cannot convert (named, with its node).
        """
        if self.onnx_model is not None:
            from edgepack.model.onnx_tflite import tflite_converter

            return tflite_converter(self.onnx_model, str(self.path), [s.name for s in self.inputs], [s.name for s in self.outputs])
        import tensorflow as tf

        if self.keras_model is not None:
            return tf.lite.TFLiteConverter.from_keras_model(self.keras_model)
        return tf.lite.TFLiteConverter.from_saved_model(str(self.path))


def sha256_path(path: Path) -> str:
    """Hash a file, every file of a directory with its relative path, or a PyTorch factory's weights."""
    from edgepack.model.torch_source import factory_sha256, is_factory

    if is_factory(path):
        return factory_sha256(str(path))
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path)}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def load_model(path: Path, data: Path | None = None) -> SourceModel:
    """Load a Keras file, a SavedModel directory, an ONNX file, a .pt2 file or a PyTorch factory.

    DATA (--data) gives a factory's model its example input.

    Raises:
        ModelError: a missing path, a format edgepack does not read, or a file the loader rejects.
    """
    from edgepack.model.torch_source import is_torch

    if is_torch(path):
        return _load_torch(path, data)
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file or directory", hint="check the model path")
    if path.suffix == ".onnx":
        return _load_onnx(path)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ModelError(f"{path}: a directory but not a SavedModel (no saved_model.pb)", hint="pass a SavedModel directory or a .keras file")
        return _load_savedmodel(path)
    if path.suffix in KERAS_SUFFIXES:
        return _load_keras(path)
    raise ModelError(
        f"{path}: unknown model format '{path.suffix}'",
        hint="edgepack reads Keras .keras / .h5 files, SavedModel directories, .onnx files, PyTorch .pt2 files and pkg.module:factory",
    )


def _load_torch(model, data: Path | None) -> SourceModel:
    from edgepack.model.torch_source import load_torch

    if not is_factory_spec(model) and not Path(model).exists():
        raise ModelError(f"{model}: no such file or directory", hint="check the model path")
    loaded = load_torch(model, data)
    inputs = [TensorInfo(*spec) for spec in loaded.inputs]
    outputs = [TensorInfo(*spec) for spec in loaded.outputs]
    return SourceModel(
        Path(str(model)), "pytorch", loaded.sha256, inputs, outputs, onnx_model=loaded.onnx_model,
        _runner=loaded.runner, torch_program=loaded.program, load_notes=loaded.notes,
    )


def is_factory_spec(model) -> bool:
    from edgepack.model.torch_source import is_factory

    return is_factory(model)




HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _load_keras(path: Path) -> SourceModel:
    import zipfile

    # Keras' own message for a damaged file is often "file not found": look at the bytes first.
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a .keras file (those are zip archives)", hint="check that the file is complete and was written by model.save()")
    if path.suffix in (".h5", ".hdf5") and path.read_bytes()[:8] != HDF5_SIGNATURE:
        raise ModelError(f"{path}: not an HDF5 file", hint="check that the file is complete and was written by model.save()")
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # the loader raises many types for a corrupt file
        raise ModelError(
            f"{path}: cannot load it as a Keras model: {first_line(exc)}",
            hint="check that the file is complete and was written by model.save()",
        ) from None
    inputs = [TensorInfo(t.name, tuple(t.shape), str(np.dtype(t.dtype))) for t in model.inputs]
    outputs = [TensorInfo(f"output_{i}", tuple(t.shape), str(np.dtype(t.dtype))) for i, t in enumerate(model.outputs)]
    return SourceModel(path, "keras", sha256_path(path), inputs, outputs, keras_model=model)


def _load_savedmodel(path: Path) -> SourceModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: cannot load the SavedModel: {first_line(exc)}", hint="check the directory is complete") from None
    signature = getattr(loaded, "signatures", {}).get("serving_default")
    if signature is None:
        raise ModelError(f"{path}: the SavedModel has no 'serving_default' signature", hint="save it with a serving signature")
    _, kwargs = signature.structured_input_signature
    inputs = [TensorInfo(name, tuple(spec.shape.as_list()), spec.dtype.name) for name, spec in sorted(kwargs.items())]
    outs = signature.structured_outputs
    outputs = [TensorInfo(name, tuple(spec.shape.as_list()), spec.dtype.name) for name, spec in sorted(outs.items())]
    return SourceModel(path, "savedmodel", sha256_path(path), inputs, outputs, signature=signature, _keep=[loaded])


def _load_onnx(path: Path) -> SourceModel:
    from edgepack.model.onnx_graph import OnnxRunner, graph_inputs, read_onnx, value_spec

    model = read_onnx(path)
    inputs, outputs, dim_names = [], [], {}
    for value in graph_inputs(model):
        name, shape, names, dtype = value_spec(value)
        inputs.append(TensorInfo(name, shape, dtype))
        dim_names[name] = names
    for value in model.graph.output:
        name, shape, _, dtype = value_spec(value)
        outputs.append(TensorInfo(name, shape, dtype))
    source = SourceModel(path, "onnx", sha256_path(path), inputs, outputs, onnx_model=model, dim_names=dim_names)
    # The session now, so that a model onnxruntime cannot load (a newer opset) fails at load time.
    source._runner = OnnxRunner(model, str(path))
    return source
