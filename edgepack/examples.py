"""A small real example: a CNN trained in seconds on scikit-learn's digits (8x8 grey images).

Used by `scripts/demo`, the tests and the benchmarks. `python -m edgepack.examples DIR` writes
DIR/digits_cnn.keras and DIR/digits.npz (x: float32 (N, 8, 8, 1) in 0..1, y: int labels).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's digits as (x float32 (1797, 8, 8, 1) scaled to 0..1, y int64)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[..., None], d.target.astype(np.int64)


def digits_cnn(x: np.ndarray, y: np.ndarray, epochs: int = 15, seed: int = 0, width: int = 16):
    """Train a small CNN (conv-conv-dense) on (x, y); about 97% test accuracy in a few seconds."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(4 * width, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="digits_cnn",
    )
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def write_example(directory: Path) -> tuple[Path, Path]:
    """Train the digits CNN on the first 1200 digits and write it and all the data to DIRECTORY."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_path, data_path = directory / "digits_cnn.keras", directory / "digits.npz"
    x, y = digits_data()
    from edgepack.quiet import quiet

    if not model_path.exists():
        partial = directory / ".digits_cnn.partial.keras"  # renamed into place: never half a model
        with quiet():
            digits_cnn(x[:1200], y[:1200]).save(partial)
        partial.rename(model_path)
    if not data_path.exists():
        partial = directory / ".digits.partial.npz"
        np.savez(partial, x=x[1200:], y=y[1200:])  # held out from training
        partial.rename(data_path)
    return model_path, data_path


if __name__ == "__main__":
    for p in write_example(Path(sys.argv[1] if len(sys.argv) > 1 else "examples")):
        print(p)
