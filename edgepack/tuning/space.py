"""The search space of `edgepack tune`: one table, each range with its reason, narrowed by the target.

Every parameter is categorical (a short list of values), so the same space serves TPE, NSGA-II,
random search and the full grid, and settings that make the same build are recognised
(`overrides`): the study measures such a build once.
"""

from __future__ import annotations

from typing import Any

from edgepack.errors import ProfileError
from edgepack.profile.schema import ENGINE_SUPPORT, CalibrationMethod, Format, IoDtype, Precision, Profile

# name -> (values, why these values). Precision comes from the runtime (ENGINE_SUPPORT).
SPACE: dict[str, tuple[list[Any], str]] = {
    "sparsity": (
        [0.0, 0.5, 0.75],
        "magnitude sparsity shrinks a compressed bundle; measured on the digits CNN, 75% with the default "
        "fine-tuning keeps accuracy within 3 points, past it small models fall apart",
    ),
    "channels": (
        [0.0, 0.25, 0.5],
        "removing filters/units is what cuts latency and memory on CPUs (sparsity alone does not); "
        "50% kept the digits CNN within a point, more removes whole features",
    ),
    "calibration_samples": (
        [100, 200, 500],
        "int8 ranges settle with a few hundred samples; fewer under-cover outliers, more only slows the build",
    ),
    "calibration_method": (
        [m.value for m in CalibrationMethod],
        "ONNX int8: min-max keeps every value, entropy and percentile clip outliers for resolution",
    ),
    "learning_rate": ([3e-4, 1e-3, 3e-3], "fine-tuning after pruning: Adam's usual range, a factor 3 apart"),
    "batch_size": ([16, 32, 64], "fine-tuning on a few hundred samples: small batches, more steps per epoch"),
    "fine_tune_epochs": ([10, 30], "the most epochs of fine-tuning (early stopping ends it sooner): 10 is quick, 30 the default"),
    "fallback": (
        ["auto", "off"],
        "recovery: auto keeps the build within the gate by keeping layers in float or climbing to fp16, "
        "at some size and latency; off keeps the precision asked for and lets the gate refuse it",
    ),
}
# Searched only where the profile's `tune:` section lists them: they matter once pruning or a
# tight gate does, and each doubles the grid.
OPT_IN = ("learning_rate", "batch_size", "fine_tune_epochs", "fallback")
# Runtime settings, also opt-in: the bench of each trial measures them (a delegate list or a
# provider list is one categorical value, written "gpu+xnnpack"; "none" for the empty list).
RUNTIME = ("threads", "delegates", "providers")
NO_LIST = "none"


def search_space(profile: Profile) -> dict[str, list[Any]]:
    """Return the values to try per parameter for PROFILE: what its runtime runs, narrowed by its `tune:` section.

    Raises:
        ProfileError: the `tune:` section asks for a precision the runtime cannot run, or leaves a parameter no value.
    """
    b, t = profile.build, profile.tune
    _, runs = ENGINE_SUPPORT[profile.runtime.engine]
    precisions = [p.value for p in Precision if p in runs and (b.io_dtype is IoDtype.float32 or p is Precision.int8)]
    if t.precision is not None:
        refused = [p.value for p in t.precision if p.value not in precisions]
        if refused:
            raise ProfileError(
                f"tune.precision {', '.join(refused)}: runtime {profile.runtime.engine.value} of target '{profile.name}' cannot run it",
                hint=f"pick from {', '.join(precisions)}",
            )
        precisions = [p.value for p in t.precision]
    space: dict[str, list[Any]] = {"precision": precisions}
    if b.format is not Format.tflite_micro:
        space["sparsity"] = _narrow(t.sparsity, "sparsity")
    space["channels"] = _narrow(t.channels, "channels")
    if "int8" in precisions:
        space["calibration_samples"] = _narrow(t.calibration_samples, "calibration_samples")
        if b.format is Format.onnx:
            space["calibration_method"] = [m.value for m in t.calibration_method] if t.calibration_method else SPACE["calibration_method"][0]
    for key in OPT_IN:
        if getattr(t, key) is not None:
            space[key] = [getattr(v, "value", v) for v in getattr(t, key)]
    space.update(runtime_space(profile))
    empty = [k for k, v in space.items() if not v]
    if empty:
        raise ProfileError(f"tune.{empty[0]} lists no value to try", hint="give at least one value, or remove the key")
    return space


def _narrow(values, key: str) -> list[Any]:
    return list(values) if values is not None else list(SPACE[key][0])


def overrides(params: dict[str, Any]) -> dict[str, Any]:
    """The `build:` section a trial's PARAMS make (what a tuned profile writes over its target)."""
    build: dict[str, Any] = {"precision": params["precision"]}
    prune = {k: params[k] for k in ("sparsity", "channels") if k in params}
    if any(prune.values()):  # fine-tuning settings matter only where something is pruned
        prune.update({k: params[k] for k in ("learning_rate", "batch_size", "fine_tune_epochs") if k in params})
    if prune:
        build["prune"] = prune
    if "fallback" in params:
        build["fallback"] = params["fallback"]
    if "calibration_samples" in params and params["precision"] == "int8":
        build["calibration_samples"] = params["calibration_samples"]
    if "calibration_method" in params and params["precision"] == "int8":
        build["onnx"] = {"calibration_method": params["calibration_method"]}
    return build


def runtime_space(profile: Profile) -> dict[str, list[Any]]:
    """The runtime settings PROFILE's `tune:` section asks to search: threads, TFLite delegates, ONNX Runtime providers.

    Raises:
        ProfileError: delegates for an ONNX target, or providers for a TFLite one.
    """
    t, fmt = profile.tune, profile.build.format
    if t.delegates is not None and fmt is not Format.tflite:
        raise ProfileError(f"tune.delegates applies to TFLite targets; '{profile.name}' builds {fmt.value}", hint="search tune.providers instead")
    if t.providers is not None and fmt is not Format.onnx:
        raise ProfileError(f"tune.providers applies to ONNX targets; '{profile.name}' builds {fmt.value}", hint="search tune.delegates instead")
    space: dict[str, list[Any]] = {}
    if t.threads is not None:
        space["threads"] = list(t.threads)
    for key in ("delegates", "providers"):
        lists = getattr(t, key)
        if lists is not None:
            space[key] = ["+".join(v) if v else NO_LIST for v in lists]
    return space


def runtime_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """The `runtime:` section a trial's PARAMS make; empty where no runtime setting is searched."""
    runtime: dict[str, Any] = {}
    if "threads" in params:
        runtime["threads"] = params["threads"]
    for key in ("delegates", "providers"):
        if key in params:
            runtime[key] = [] if params[key] == NO_LIST else params[key].split("+")
    return runtime


def trial_settings(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The profile sections a trial's PARAMS make: `build:`, and `runtime:` where runtime settings are searched.

    Two trials with the same settings make the same bundle and measure the same: the study measures it once.
    """
    sections = {"build": overrides(params)}
    runtime = runtime_overrides(params)
    if runtime:
        sections["runtime"] = runtime
    return sections
