"""Detector-shaped ONNX models and image-like data for them, made directly with onnx.helper.

The model is U-Net-like: strided 3x3 convolutions down to 1/16 of the input, a bottleneck,
ConvTranspose upsampling with skip connections, and a 1x1 head with a sigmoid probability map,
as in DB/FPN-style text and segmentation detectors. Its weights are `Constant` nodes, as some
exporters write them (or initializers, with `constants=False`); batch and spatial dimensions are
dynamic; opset 12.

Like real exported detectors, one channel near the head carries large activations (a folded
normalisation whose scale the next layer undoes): past float16's range, and enough to drown the
other channels in a per-tensor int8 scale. So plain int8 and plain fp16 both miss the dense gate.

    python -m tests.onnx_detectors OUT_DIR [--width 1.0] [--size 320]   # writes detector.onnx, data.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OPSET = 12
OUTLIER = 3e5  # the scale of the large channel before the head: its activations pass float16's 65504


def detector(width: float = 0.8, constants: bool = True, seed: int = 0, outlier: float = OUTLIER, norm_variance: float = 0.0, gain: bool = False):
    """Return the ONNX ModelProto; WIDTH scales every layer's channels (0.8: about 5 MB of weights).

    NORM_VARIANCE > 0 adds a BatchNormalization `head_norm` before the head whose running variance
    is that large and whose scale undoes it (an identity in float), as a real text detector's head
    has (PP-OCRv4's, 1e8): a weight past float16's range. GAIN makes the large channel with a `Mul`
    after `dec1` rather than with `dec1`'s weights alone: every weight is then within float16's
    range, and only running the model shows that the activations pass it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c = [max(4, int(round(k * width))) for k in (32, 64, 128, 256)]
    nodes, inits = [], []

    def weight(name: str, array: np.ndarray) -> str:
        array = array.astype(np.float32)
        if constants:
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name + "_value")))
        else:
            inits.append(numpy_helper.from_array(array, name))
        return name

    def conv(name, x, cin, cout, k=3, stride=1, relu=True, scale=None):
        w = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k))
        b = rng.normal(0, 0.05, cout)
        if scale is not None:
            w, b = w * scale[:, None, None, None], b * scale
        nodes.append(helper.make_node("Conv", [x, weight(name + "_w", w), weight(name + "_b", b)], [name],
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, name=name))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [name + "_relu"], name=name + "_relu"))
        return name + "_relu"

    def up(name, x, cin, cout, skip=None, in_scale=None):
        w = rng.normal(0, np.sqrt(2.0 / (cin * 4)), (cin, cout, 2, 2))
        if in_scale is not None:
            w = w * in_scale[:, None, None, None]
        b = rng.normal(0, 0.05, cout)
        nodes.append(helper.make_node("ConvTranspose", [x, weight(name + "_w", w), weight(name + "_b", b)], [name],
                                      kernel_shape=[2, 2], strides=[2, 2], name=name))
        out = name
        if skip is not None:
            nodes.append(helper.make_node("Add", [name, skip], [name + "_add"], name=name + "_add"))
            out = name + "_add"
        nodes.append(helper.make_node("Relu", [out], [name + "_relu"], name=name + "_relu"))
        return name + "_relu"

    e1 = conv("enc1", "image", 3, c[0], stride=2)
    e2 = conv("enc2", e1, c[0], c[1], stride=2)
    e3 = conv("enc3", e2, c[1], c[2], stride=2)
    e4 = conv("enc4", e3, c[2], c[3], stride=2)
    b1 = conv("bottleneck1", e4, c[3], c[3])
    b2 = conv("bottleneck2", b1, c[3], c[3])
    d3 = up("up3", b2, c[3], c[2], skip=e3)
    d3 = conv("dec3", d3, c[2], c[2])
    d2 = up("up2", d3, c[2], c[1], skip=e2)
    d2 = conv("dec2", d2, c[1], c[1])
    d1 = up("up1", d2, c[1], c[0], skip=e1)
    big = np.ones(c[0])
    big[0] = outlier
    if gain:  # the large channel from the weights and a gain after them, each within float16's range
        root = np.sqrt(big)
        d1 = conv("dec1", d1, c[0], c[0], scale=root)
        nodes.append(helper.make_node("Mul", [d1, weight("dec1_gain_value", root.reshape(1, -1, 1, 1))], ["dec1_gain"], name="dec1_gain"))
        d1 = "dec1_gain"
    else:
        d1 = conv("dec1", d1, c[0], c[0], scale=big)
    h = up("head_up", d1, c[0], 16, in_scale=1 / big)  # undoes the large channel's scale: the float model is well behaved
    if norm_variance > 0:
        scale = np.full(16, np.sqrt(norm_variance + 1e-5))
        params = [weight(f"head_norm_{k}", v) for k, v in (("scale", scale), ("bias", np.zeros(16)), ("mean", np.zeros(16)), ("var", np.full(16, norm_variance)))]
        nodes.append(helper.make_node("BatchNormalization", [h] + params, ["head_norm"], epsilon=1e-5, name="head_norm"))
        h = "head_norm"
    logits = conv("head", h, 16, 1, k=1, relu=False, scale=np.full(1, 6.0))  # a confident map
    nodes.append(helper.make_node("Sigmoid", [logits], ["probability"], name="probability"))
    graph = helper.make_graph(
        nodes, "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1, "height", "width"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="detector-builder")
    model.ir_version = 7
    return model


def blob_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """N images (N, 3, SIZE, SIZE) in 0..1 with structure: smooth coloured blobs and strokes on a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        img = (rng.uniform(0.1, 0.4, (3, 1, 1)) * (1 + 0.5 * xx - 0.3 * yy)).astype(np.float32)
        for _ in range(rng.integers(4, 10)):
            cy, cx = rng.uniform(0, 1, 2)
            sy, sx = rng.uniform(0.02, 0.15, 2)
            blob = np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2) / 2)
            img += rng.uniform(-0.5, 0.8, (3, 1, 1)).astype(np.float32) * blob
        images[i] = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    return images


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=float, default=0.8)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--initializers", action="store_true", help="weights as initializers rather than Constant nodes")
    args = parser.parse_args(argv)
    import onnx

    args.out.mkdir(parents=True, exist_ok=True)
    onnx.save(detector(args.width, constants=not args.initializers), str(args.out / "detector.onnx"))
    np.savez(args.out / "data.npz", x=blob_images(args.samples, args.size))


if __name__ == "__main__":
    main()
