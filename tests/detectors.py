"""Detector-shaped Keras models and data: a MobileNetV2 backbone, an FPN-like head that upsamples
with Conv2DTranspose, and a sigmoid probability map as its output (the shape of DB/FPN text
detectors and of segmentation heads), with images that have structure and maps of realistic values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def detector_model(size: int, alpha: float = 1.0, outlier: float = 0.0, backbone: str = "mobilenetv2"):
    """Build the detector for SIZE x SIZE RGB input; its output is a (size/4 x size/4 x 1) sigmoid map.

    Args:
        size: the input's height and width (a multiple of 32).
        alpha: MobileNetV2's width multiplier (0.35 for a small model, 1.0 for the real one).
        outlier: where > 0, one channel of the head's fused features is that many times larger,
            undone by the next layer's weights: the same function in float, but a per-tensor int8
            activation range then swamps every other channel of that tensor (as an unbounded
            activation in a real head does). The layers are `fuse` and `head`.
        backbone: "mobilenetv2", or "tiny" for a few strided convolutions (a test-sized model).
    """
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((size, size, 3), name="image")
    if backbone == "mobilenetv2":
        base = keras.applications.MobileNetV2(input_tensor=image, alpha=alpha, include_top=False, weights=None)
        names = ["block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu"]  # strides 4, 8, 16, 32
        features = [base.get_layer(n).output for n in names]
    else:
        x, features = image, []
        for i, width in enumerate((16, 24, 32, 48, 64)):
            x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name=f"down{i}")(x)
            if i >= 1:
                features.append(x)
    width = 64
    top = keras.layers.Conv2D(width, 1, name="lateral3")(features[-1])
    for i in range(len(features) - 2, -1, -1):  # top-down: upsample, add the lateral
        top = keras.layers.Conv2DTranspose(width, 2, strides=2, padding="same", name=f"up{i}")(top)
        top = keras.layers.Add(name=f"merge{i}")([top, keras.layers.Conv2D(width, 1, name=f"lateral{i}")(features[i])])
    fused = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="fuse")(top)
    logits = keras.layers.Conv2D(1, 1, name="head")(fused)
    prob = keras.layers.Activation("sigmoid", name="prob")(logits)
    model = keras.Model(image, prob, name="detector")
    _calibrate_head(model, size, outlier)
    return model


def _calibrate_head(model, size: int, outlier: float) -> None:
    """Scale the head so that the map spans the sigmoid's range on structured images, mostly low
    with bright regions (a random backbone alone answers a flat 0.5), and, with OUTLIER, move one
    channel's magnitude from `fuse` into `head`."""
    import keras

    fuse, head = model.get_layer("fuse"), model.get_layer("head")
    features = np.asarray(keras.Model(model.input, fuse.output)(detector_images(size, 4, seed=99)))
    kernel, bias = head.get_weights()
    kernel = kernel + np.sign(kernel) * np.abs(kernel).mean()  # a head that reads every channel
    logits = features.reshape(-1, features.shape[-1]) @ kernel[0, 0]
    gain = 3.0 / (float(logits.std()) or 1.0)
    head.set_weights([kernel * gain, np.asarray([-gain * float(np.percentile(logits, 70))], np.float32)])
    if outlier > 0:
        fk, fb = fuse.get_weights()
        fk[..., 0] *= outlier
        fb[0] *= outlier
        fuse.set_weights([fk, fb])
        hk, hb = head.get_weights()
        hk[..., 0, :] /= outlier
        head.set_weights([hk, hb])


def detector_images(size: int, n: int, seed: int = 0) -> np.ndarray:
    """Return N images with structure: a smooth background with bright and dark rectangles and
    strokes (text-like), in [-1, 1] as MobileNetV2 expects, float32 (N, size, size, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((n, size, size, 3), np.float32)
    for k in range(n):
        a, b, c = rng.uniform(-1, 1, 3)
        base = 0.3 * (a * xx + b * yy + c * np.sin(6 * xx + 3 * yy))
        img = np.repeat(base[..., None], 3, axis=2) + rng.uniform(-0.2, 0.2, (1, 1, 3))
        for _ in range(int(rng.integers(4, 12))):
            h, w = rng.integers(size // 40 + 1, size // 6 + 2, 2)
            y0, x0 = rng.integers(0, size - h), rng.integers(0, size - w)
            img[y0 : y0 + h, x0 : x0 + w] = rng.uniform(-1, 1, 3)
            for s in range(int(rng.integers(1, 4))):  # strokes inside the box, like characters
                col = x0 + int(rng.integers(0, w))
                img[y0 : y0 + h, col : col + max(1, size // 160)] = -img[y0, x0]
        img += rng.normal(0, 0.03, img.shape).astype(np.float32)
        out[k] = np.clip(img, -1, 1)
    return out


def write_detector(directory: Path, size: int, n: int = 48, alpha: float = 1.0, outlier: float = 0.0, backbone: str = "mobilenetv2") -> tuple[Path, Path]:
    """Save the detector as DIRECTORY/detector<size>.keras and N of its images as detector<size>.npz."""
    model = detector_model(size, alpha, outlier, backbone)
    name = f"detector{size}" + ("" if backbone == "mobilenetv2" else f"_{backbone}") + (f"_outlier{outlier:g}" if outlier else "")
    model.save(directory / f"{name}.keras")
    np.savez(directory / f"{name}.npz", x=detector_images(size, n))
    return directory / f"{name}.keras", directory / f"{name}.npz"
