"""Calibration and evaluation data: .npz, .npy or a folder of images, checked against the model.

A .npz holds `x` (or `x_0`, `x_1`, ... for a model with several inputs) and optionally `y`
(integer labels). An image folder holds images, or one sub-folder of images per class (the
sorted folder names are the labels); images are resized to the model's input and scaled to
[0, 1], and that scaling is recorded in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edgepack.errors import DataError
from edgepack.model.source import TensorInfo, sha256_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


@dataclass
class Dataset:
    x: list[np.ndarray]  # one array per model input, batch first
    y: Optional[np.ndarray] = None
    source: str = ""
    sha256: str = ""
    notes: dict = field(default_factory=dict)  # how it was prepared (scaling, synthetic, ...)

    def __len__(self) -> int:
        return len(self.x[0])

    def take(self, idx: np.ndarray) -> "Dataset":
        y = self.y[idx] if self.y is not None else None
        return Dataset([x[idx] for x in self.x], y, self.source, self.sha256, dict(self.notes))


# Inputs beyond this are refused: quantization scales and the verify statistics overflow float32 long
# before finite float32 values do (x = 1e38 ended as an internal error inside XNNPACK), and no model
# is trained on inputs that large.
MAX_ABS_VALUE = 1e9


def load_data(path: Path, inputs: list[TensorInfo], outputs: list[TensorInfo] | None = None) -> Dataset:
    """Load data for a model with INPUTS (and OUTPUTS, to check labels against) and check that it fits them.

    Raises:
        DataError: a missing or unreadable file, missing arrays, shapes/dtypes the model does not
            take, values that are not finite, or labels that are not classes of the model's output.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory", hint="check the --data path")
    if path.is_dir():
        data = _load_images(path, inputs)
    elif path.suffix == ".npz":
        data = _load_npz(path, inputs)
    elif path.suffix == ".npy":
        data = Dataset([_load_array(path)], None)
    else:
        raise DataError(f"{path}: unknown data format '{path.suffix}'", hint="use .npz (x, y), .npy, or a folder of images")
    data.source = str(path)
    data.sha256 = data.sha256 or sha256_path(path)
    _check(data, inputs, path)
    if data.y is not None:
        data.y = _labels(data.y, outputs or [], path, data.notes)
    return data


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read it as a NumPy array: {str(exc).splitlines()[0]}") from None


def _load_npz(path: Path, inputs: list[TensorInfo]) -> Dataset:
    import zipfile

    if not zipfile.is_zipfile(path):  # numpy's own message talks of pickles
        raise DataError(f"{path}: not a .npz file (those are zip archives)", hint="save it with np.savez(path, x=inputs, y=labels)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        raise DataError(f"{path}: cannot read it as a .npz file: {str(exc).splitlines()[0]}") from None
    if len(inputs) == 1 and "x" in arrays:
        xs = [arrays["x"]]
    elif all(f"x_{i}" in arrays for i in range(len(inputs))):
        xs = [arrays[f"x_{i}"] for i in range(len(inputs))]
    else:
        want = "x" if len(inputs) == 1 else ", ".join(f"x_{i}" for i in range(len(inputs)))
        raise DataError(
            f"{path}: no input arrays: expected {want}, found {', '.join(arrays) or 'nothing'}",
            hint="save it with np.savez(path, x=inputs, y=labels)",
        )
    y = arrays.get("y")
    if y is not None and y.ndim == 0:
        raise DataError(f"{path}: y is a single value, not one label per sample", hint="save y with shape (N,)")
    if y is not None and len(y) != len(xs[0]):
        raise DataError(f"{path}: y has {len(y)} labels for {len(xs[0])} samples")
    return Dataset(xs, y)


def _load_images(folder: Path, inputs: list[TensorInfo]) -> Dataset:
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise DataError(f"{folder}: an image folder needs a model with one image input (N, H, W, C) or (N, C, H, W)")
    _, h, w, c = inputs[0].shape
    channels_first = inputs[0].shape[1] in (1, 3) and c not in (1, 3)  # (N, C, H, W), as PyTorch exports
    if channels_first:
        _, c, h, w = inputs[0].shape
    if h is None or w is None or c not in (1, 3):
        raise DataError(
            f"{folder}: the model input {inputs[0].shape} has no fixed image size to resize to",
            hint=f"fix it with --input-shape {inputs[0].name}:1x" + ("3xHxW" if channels_first else "HxWx3") + ", or pass .npz data",
        )
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if classes:
        files = [(f, label) for label, d in enumerate(classes) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, -1) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found", hint="put images in it, or one folder per class")
    import tensorflow as tf

    images = []
    for f, _ in files:
        try:
            img = tf.io.decode_image(f.read_bytes(), channels=c, expand_animations=False)
        except Exception:
            raise DataError(f"{f}: not a readable image") from None
        images.append(tf.image.resize(tf.cast(img, tf.float32), (h, w)).numpy() / 255.0)
    y = np.array([label for _, label in files]) if classes else None
    notes = {"image_scaling": "pixel / 255 (range 0..1)", "image_size": [h, w, c], "classes": [d.name for d in classes]}
    x = np.stack(images).astype(np.float32)
    if channels_first:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        notes["layout"] = "NCHW"
    return Dataset([x], y, notes=notes)


def _check(data: Dataset, inputs: list[TensorInfo], path: Path) -> None:
    if len(data.x) != len(inputs):
        raise DataError(f"{path}: {len(data.x)} input arrays for a model with {len(inputs)} inputs")
    if any(x.ndim == 0 or len(x) == 0 for x in data.x):
        raise DataError(f"{path}: the data has no samples", hint="save at least two samples (one to calibrate, one to evaluate)")
    for i, (x, spec) in enumerate(zip(data.x, inputs)):
        want = spec.shape[1:]
        got = x.shape[1:]
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            raise DataError(
                f"{path}: data x{'' if len(inputs) == 1 else f'_{i}'} has samples of shape {tuple(got)}, "
                f"but model input '{spec.name}' takes {tuple(want)} (full shape {spec.shape})",
                hint="reshape the data to the model's input shape before saving it",
            )
        if np.issubdtype(spec.dtype, np.floating) and not np.issubdtype(x.dtype, np.floating):
            raise DataError(
                f"{path}: data is {x.dtype} but model input '{spec.name}' takes {spec.dtype}",
                hint="scale it the way the model was trained (e.g. pixels / 255) and save it as float32",
            )
        if x.dtype.kind not in "fiub":
            raise DataError(f"{path}: data x{'' if len(inputs) == 1 else f'_{i}'} holds {x.dtype} values, not numbers", hint="save numeric arrays")
        with np.errstate(over="ignore"):  # first: a float64 1e300 becomes inf in float32, refused below
            x = x.astype(spec.dtype, copy=False)
        if x.dtype.kind == "f":
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if bad.any():
                raise DataError(
                    f"{path}: {int(bad.sum())} of {len(x)} samples hold NaN or infinite values (the first is sample {int(np.argmax(bad))})",
                    hint="drop or repair those samples before saving the data",
                )
            big = (np.abs(x.reshape(len(x), -1)) > MAX_ABS_VALUE).any(axis=1)
            if big.any():
                raise DataError(
                    f"{path}: {int(big.sum())} of {len(x)} samples hold values beyond ±{MAX_ABS_VALUE:g} "
                    f"(the first is sample {int(np.argmax(big))}, largest |x| {float(np.abs(x).max()):.3g})",
                    hint=f"scale the data as the model was trained (inputs within ±{MAX_ABS_VALUE:g}); quantization cannot represent such values",
                )
        data.x[i] = x


def _labels(y: np.ndarray, outputs: list[TensorInfo], path: Path, notes: dict) -> np.ndarray | None:
    """Check labels against the model's first output: integer classes within its range (one-hot is converted, with a note).

    A label outside the classes would make the accuracy 0% before and after, and the accuracy gate
    would pass anything: so it is refused. Labels are only used for a classes output (2-D, more
    than one class); for any other (a sigmoid, a regression, a map) they are set aside with a note.
    """
    shape = outputs[0].shape if outputs else ()
    if len(shape) != 2 or shape[-1] == 1:
        notes["labels"] = "labels set aside: the model's first output is not class scores, so there is no accuracy to measure"
        return None
    classes = shape[-1]  # None: a dynamic class dimension, checked against the model's answers in verify
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind not in "iuf" and y.dtype.kind != "b":
        raise DataError(f"{path}: labels y are {y.dtype} values", hint="save y as integer class indices 0..N-1 (np.int64)")
    if y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        if classes is not None and y.shape[1] != classes:
            raise DataError(f"{path}: one-hot labels y have {y.shape[1]} classes, but the model's output has {classes}", hint="save y for the model's classes")
        notes["labels"] = f"one-hot labels ({y.shape[1]} columns) converted to class indices"
        return y.argmax(axis=1)
    if y.ndim != 1:
        raise DataError(f"{path}: labels y have shape {y.shape}", hint="save y as one integer class index per sample, shape (N,)")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not (y == np.round(y)).all():
            raise DataError(f"{path}: labels y are fractional or not finite ({y.dtype})", hint="save y as integer class indices 0..N-1 (np.int64)")
        y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: labels y include {int(y.min())}: classes are numbered from 0", hint="save y as class indices 0..N-1")
    if classes is not None and len(y) and y.max() >= classes:
        raise DataError(
            f"{path}: labels y include class {int(y.max())}, but the model's output has {classes} classes (0..{classes - 1})",
            hint="check that the labels belong to this model (and are numbered from 0)",
        )
    return y.astype(np.int64, copy=False)


def split(data: Dataset, calibration_samples: int, eval_data: Dataset | None = None, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Return (calibration, evaluation) parts that do not overlap.

    With EVAL_DATA, calibration is up to CALIBRATION_SAMPLES of DATA and evaluation is EVAL_DATA.
    Otherwise DATA is shuffled and split: calibration takes at most half of it.
    """
    order = np.random.default_rng(seed).permutation(len(data))
    if eval_data is not None:
        return data.take(order[:calibration_samples]), eval_data
    if len(data) < 2:
        raise DataError(f"{data.source}: {len(data)} sample is too few to calibrate and evaluate", hint="give more data, or --eval-data")
    n_cal = min(calibration_samples, len(data) // 2)
    return data.take(order[:n_cal]), data.take(order[n_cal:])


def synthetic(inputs: list[TensorInfo], n: int, seed: int = 0) -> Dataset:
    """Random standard-normal inputs: a last resort for calibration, marked loudly wherever used."""
    rng = np.random.default_rng(seed)
    xs = []
    for spec in inputs:
        if any(d is None for d in spec.shape[1:]):
            raise DataError(
                f"model input '{spec.name}' has dynamic dimensions {spec.shape}: synthetic data needs a fixed shape",
                hint=f"pass --data (its size is used), or --input-shape {spec.name}:" + "x".join(str(d or "N") for d in spec.shape),
            )
        xs.append(rng.standard_normal((n, *spec.shape[1:])).astype(spec.dtype))
    return Dataset(xs, None, source="synthetic", sha256="synthetic", notes={"synthetic": True})
