"""Prune Keras 3 models (the prune step for Keras sources): per-layer magnitude sparsity, and structured channel removal.

tensorflow-model-optimization cannot prune Keras 3 models, so this is edgepack's own:
- magnitude: zero the smallest weights of each Dense/Conv kernel; masks are re-applied after
  every fine-tuning step so pruned weights stay zero;
- channels: drop the conv filters / dense units with the smallest L1 norm and rebuild a smaller
  model from the surviving weights. This really cuts latency and memory, but only works where
  every layer feeds the next (a chain); a branch or a merge is refused, naming the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepack.builder.prune import Pruned, PruneReport
from edgepack.errors import BuildError
from edgepack.model.source import SourceModel

# Layers that carry channels through unchanged and have no weights to slice.
_PASS_THROUGH = {
    "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "Dropout", "SpatialDropout2D",
    "MaxPooling2D", "AveragePooling2D", "MaxPooling1D", "AveragePooling1D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D", "GlobalMaxPooling1D",
    "ZeroPadding2D", "Cropping2D", "Identity", "GaussianNoise", "Rescaling",
}


def prunable_kernels(model) -> list[Any]:
    """Return the kernel variables magnitude pruning applies to (Dense and convolution kernels)."""
    import keras

    kernels = []
    for layer in all_layers(model):
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
            kernels.append(layer.kernel)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kernels.append(layer.depthwise_kernel)
    return kernels


def all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model
            yield from all_layers(layer)
        else:
            yield layer


def magnitude_masks(model, sparsity: float) -> list[tuple[Any, np.ndarray]]:
    """Zero the fraction SPARSITY of smallest-magnitude weights in each kernel; return (kernel, mask) pairs."""
    masks = []
    for kernel in prunable_kernels(model):
        w = np.asarray(kernel.numpy())
        k = int(round(sparsity * w.size))
        mask = np.ones(w.size, dtype=w.dtype)
        if k > 0:
            mask[np.argpartition(np.abs(w).ravel(), k - 1)[:k]] = 0
        mask = mask.reshape(w.shape)
        kernel.assign(w * mask)
        masks.append((kernel, mask))
    return masks


def measured_sparsity(masks: list[tuple[Any, np.ndarray]]) -> float:
    """Return the fraction of zero weights over all masked kernels."""
    total = sum(m.size for _, m in masks)
    zeros = sum(int(np.count_nonzero(np.asarray(k.numpy()) == 0)) for k, _ in masks)
    return zeros / total if total else 0.0


@dataclass
class FineTuneReport:
    epochs: int  # run, of at most `fine_tune_epochs`
    best_epoch: int  # whose weights were kept (1-based)
    samples: int  # trained on
    held_out: int  # for early stopping
    best_loss: float  # on the held-out part (or the training data when there is none)


def fine_tune(model, x: list[np.ndarray], targets, loss, settings, sparsity: float = 0.0, progress=None) -> tuple[list[tuple[Any, np.ndarray]], FineTuneReport]:
    """Train MODEL on (X, TARGETS), pruning it to SPARSITY on the way; keep the best epoch's weights.

    With `settings.schedule` gradual, sparsity ramps up as s * (1 - (1 - t)^3) over the first 60%
    of the epochs (at most 10) (t: the fraction of the ramp done), so the network adapts while it loses weights;
    masks are re-chosen by magnitude each epoch and re-applied after every step. A fifth of the
    data (at least 50 samples in all) is held out: once the ramp is done, training stops when its
    loss has not improved for `settings.patience` epochs, and the best weights are restored.

    PROGRESS, where given, hears of each epoch as it ends: progress(detail, kind="epoch", k=, n=,
    loss=, val_loss=) (val_loss None while the ramp runs: nothing is held out then).

    Returns:
        The final (kernel, mask) pairs (empty without sparsity), and what fine-tuning did.
    """
    import keras

    def report(epoch: int, history, score: float | None) -> None:
        if progress is None:
            return
        train_loss = float(history.history["loss"][-1]) if history.history.get("loss") else None
        said = f"epoch {epoch} of {epochs}" + (f", loss {train_loss:.4g}" if train_loss is not None else "")
        said += f", validation loss {score:.4g}" if score is not None else (", sparsity ramping up" if ramp else "")
        progress(said, kind="epoch", k=epoch, n=epochs, loss=train_loss, val_loss=score)

    masks: list[tuple[Any, np.ndarray]] = []

    class KeepMasks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for kernel, mask in masks:
                kernel.assign(kernel * mask)

    n = len(x[0])
    order = np.random.default_rng(0).permutation(n)
    n_val = n // 5 if n >= 50 else 0
    val, train = order[:n_val], order[n_val:]

    def part(idx):
        xs = [a[idx] for a in x]
        ts = [t[idx] for t in targets] if isinstance(targets, list) else targets[idx]
        return (xs if len(xs) > 1 else xs[0]), ts

    (x_train, t_train), (x_val, t_val) = part(train), part(val if n_val else train)
    epochs = settings.fine_tune_epochs
    # The ramp: 60% of the epochs, at most 10, so that the cap on epochs stays a cap and not a floor.
    ramp = max(1, min(10, int(round(0.6 * epochs)))) if sparsity > 0 and settings.schedule.value == "gradual" else 0
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate), loss=loss)
    best, best_weights, best_epoch, waited, run = np.inf, None, 0, 0, 0
    for epoch in range(epochs):
        if sparsity > 0:
            done = min(1.0, (epoch + 1) / ramp) if ramp else 1.0
            masks = magnitude_masks(model, sparsity * (1 - (1 - done) ** 3))
        history = model.fit(x_train, t_train, epochs=1, batch_size=settings.batch_size, verbose=0, shuffle=True, callbacks=[KeepMasks()])
        run = epoch + 1
        if run < ramp:
            report(run, history, None)
            continue  # the model is not yet as sparse as asked: nothing to keep
        score = float(np.ravel(model.evaluate(x_val, t_val, verbose=0, batch_size=256))[0])
        report(run, history, score)
        if score < best - 1e-7:
            best, best_weights, best_epoch, waited = score, model.get_weights(), run, 0
        else:
            waited += 1
            if waited >= settings.patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    if sparsity > 0:
        masks = magnitude_masks(model, sparsity)  # the kept weights are already this sparse: this only records the masks
    return masks, FineTuneReport(run, best_epoch, len(train), n_val, float(best))


def recovery_objective(original_outputs: list[np.ndarray], labels: np.ndarray | None) -> tuple[np.ndarray, str, str]:
    """Choose what fine-tuning trains towards: the labels where they fit one classifier output,
    otherwise the original model's outputs (distillation). Returns (targets, loss, description)."""
    out = original_outputs[0]
    if labels is not None and len(original_outputs) == 1 and out.ndim == 2 and out.shape[1] > 1:
        probabilities = bool(np.all(out >= 0) and np.allclose(out.sum(axis=1), 1, atol=1e-3))
        if probabilities:
            return labels, "sparse_categorical_crossentropy", "labels"
        import keras

        return labels, keras.losses.SparseCategoricalCrossentropy(from_logits=True), "labels"
    return (original_outputs if len(original_outputs) > 1 else out), "mse", "distillation from the original outputs"


def channel_prune(model, fraction: float):
    """Return a smaller copy of MODEL without the FRACTION of filters/units with the smallest L1 norm.

    The last Dense/Conv layer keeps all its units (it defines the model's outputs).

    Raises:
        BuildError: the model is not a chain of layers, or holds a layer whose channels cannot be sliced.
    """
    import keras

    chain = _chain(model)
    kinds = (keras.layers.Conv2D, keras.layers.Conv1D, keras.layers.Dense)
    prunable = [i for i, layer in enumerate(chain) if type(layer) in kinds]
    if len(prunable) < 2:
        raise BuildError("channel pruning needs at least two Dense/Conv layers (the last one is never pruned)")
    keep: np.ndarray | None = None  # channels of the current tensor that survive
    removed: dict[str, int] = {}
    rebuilt = []
    for i, layer in enumerate(chain):
        weights = layer.get_weights()
        config = layer.get_config()
        name = type(layer).__name__
        if type(layer) in kinds:
            kernel = weights[0] if keep is None else np.take(weights[0], keep, axis=-2)
            rest = weights[1:]
            keep = None
            if i != prunable[-1]:
                units = kernel.shape[-1]
                n_keep = max(1, units - int(round(fraction * units)))
                norms = np.abs(kernel).reshape(-1, units).sum(axis=0)
                keep = np.sort(np.argsort(-norms, kind="stable")[:n_keep])
                kernel = kernel[..., keep]
                rest = [b[keep] for b in rest]
                config["filters" if "filters" in config else "units"] = n_keep
                removed[layer.name] = units - n_keep
            weights = [kernel, *rest]
        elif name == "BatchNormalization":
            weights = weights if keep is None else [w[keep] for w in weights]
        elif name == "DepthwiseConv2D":
            if config.get("depth_multiplier", 1) != 1:
                raise BuildError(f"channel pruning: layer '{layer.name}' (DepthwiseConv2D) has depth_multiplier > 1, which it cannot slice")
            if keep is not None:
                weights = [np.take(weights[0], keep, axis=2), *[b[keep] for b in weights[1:]]]
        elif name == "Flatten":
            if keep is not None:
                shape = layer.input.shape[1:]
                positions = int(np.prod(shape[:-1]))
                keep = (np.arange(positions)[:, None] * shape[-1] + keep[None, :]).ravel()
        elif name not in _PASS_THROUGH or weights:
            raise BuildError(
                f"channel pruning: layer '{layer.name}' ({name}) is not supported",
                hint="set build.prune.channels: 0 and use build.prune.sparsity instead",
            )
        rebuilt.append((type(layer).from_config(config), weights))

    inputs = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name=model.inputs[0].name)
    x = inputs
    for new_layer, _ in rebuilt:
        x = new_layer(x)
    smaller = keras.Model(inputs, x, name=f"{model.name}_pruned")
    for new_layer, weights in rebuilt:
        new_layer.set_weights(weights)
    return smaller, removed


def _chain(model) -> list:
    """Return MODEL's layers in order if each one takes the previous one's output; refuse branches."""
    import keras

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise BuildError(
            f"channel pruning supports models with one input and one output ({len(model.inputs)} in, {len(model.outputs)} out)",
            hint="set build.prune.channels: 0 and use build.prune.sparsity instead",
        )
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    previous = model.inputs[0]
    for layer in layers:
        inputs = layer.input
        if isinstance(inputs, (list, tuple)):
            raise BuildError(
                f"channel pruning: layer '{layer.name}' ({type(layer).__name__}) merges {len(inputs)} branches, "
                "whose channels would have to be pruned together",
                hint="set build.prune.channels: 0 and use build.prune.sparsity instead",
            )
        if inputs is not previous:
            raise BuildError(
                f"channel pruning: layer '{layer.name}' ({type(layer).__name__}) does not take the output of the "
                "layer before it: the model branches there",
                hint="set build.prune.channels: 0 and use build.prune.sparsity instead",
            )
        if hasattr(layer, "layers"):
            raise BuildError(f"channel pruning: layer '{layer.name}' is a nested model, which it cannot slice")
        previous = layer.output
    return layers


def prune(original: SourceModel, p) -> Pruned:
    """Remove channels and, without fine-tuning, zero weights of a copy of ORIGINAL as P (build.prune) says."""
    import keras

    working = keras.models.clone_model(original.keras_model)
    working.set_weights(original.keras_model.get_weights())
    removed: dict[str, int] = {}
    if p.channels > 0:
        working, removed = channel_prune(working, p.channels)
    # Without fine-tuning, all of the sparsity at once; with it, on the way (the schedule).
    masks = magnitude_masks(working, p.sparsity) if p.sparsity > 0 and p.fine_tune_epochs == 0 else []
    return _pruned(original, working, removed, masks, None)


def tune(original: SourceModel, pruned: Pruned, training, p, progress) -> Pruned:
    """Fine-tune the pruned model on TRAINING (the --train-data, else the calibration data), sparsifying it on the way."""
    targets, loss, how = recovery_objective(original.predict(training.x), training.y)
    progress(f"at most {p.fine_tune_epochs} epochs on {len(training)} samples, {how}, {p.schedule.value}")
    masks, tuned = fine_tune(pruned.working, training.x, targets, loss, p, p.sparsity, progress)
    return _pruned(original, pruned.working, pruned.report.channels_removed, masks, tuned)


def _pruned(original: SourceModel, working, removed: dict[str, int], masks, tuned) -> Pruned:
    report = PruneReport(
        params_before=original.params,
        params_after=int(working.count_params()),
        sparsity=measured_sparsity(masks) if masks else 0.0,
        channels_removed=removed,
        fine_tune=tuned.__dict__ if tuned else None,
    )
    model = SourceModel(original.path, "keras", original.sha256, original.inputs, original.outputs, keras_model=working)
    return Pruned(model, report, working)
