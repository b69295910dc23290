"""Does it fit? Flash and RAM needed versus available, the latency estimate, and the summary of
a microcontroller bundle for `edgepack bench` (static figures: nothing here runs on the device).

flash = model bytes + the profile's runtime code size (TFLite Micro and its kernels)
RAM   = tensor arena + the profile's reserved RAM (stack, heap, the application's buffers)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepack.micro.graph import Graph
from edgepack.profile.schema import Profile

KB = 1024
# The ops whose multiply-accumulates the latency estimate counts; the rest (pooling,
# activations, softmax, reshapes) cost little next to them and are left out, as stated.
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")


def _elements(shape) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 1)
    return n


def op_macs(graph: Graph, op) -> int:
    """Return the multiply-accumulates of one operator (0 for ops outside MAC_OPS)."""
    t = graph.tensors
    if op.op not in MAC_OPS or len(op.inputs) < 2 or not op.outputs:
        return 0
    out = _elements(t[op.outputs[0]].shape)
    if op.op == "CONV_2D":  # filter (out, kh, kw, in / groups)
        f = t[op.inputs[1]].shape
        return out * _elements(f[1:])
    if op.op == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, out)
        f = t[op.inputs[1]].shape
        return out * _elements(f[1:3])
    if op.op == "FULLY_CONNECTED":  # filter (units, in)
        return out * int(t[op.inputs[1]].shape[-1])
    if op.op == "TRANSPOSE_CONV" and len(op.inputs) >= 3:  # (output shape, filter (out, kh, kw, in), input)
        f = t[op.inputs[1]].shape
        return _elements(t[op.inputs[2]].shape) * _elements(f[:3])
    if op.op == "BATCH_MATMUL":  # lhs (..., m, k)
        return out * int(t[op.inputs[0]].shape[-1])
    return 0


def latency(graph: Graph, profile: Profile) -> dict[str, Any]:
    """Estimate one inference's latency from the MAC count, the clock and the cycles per MAC."""
    macs = sum(op_macs(graph, op) for op in graph.operators)
    clock = profile.hardware.clock_mhz
    cpm = profile.micro.cycles_per_mac
    ms = macs * cpm / (clock * 1e3) if clock else None
    return {
        "estimate_ms": ms,
        "macs": macs,
        "clock_mhz": clock,
        "cycles_per_mac": cpm,
        "how": (
            f"estimate, not measured: {macs:,} MACs of {', '.join(o.lower() for o in MAC_OPS)} ops "
            f"x {cpm:g} cycles/MAC (the profile's assumption for {profile.hardware.cpu}) / {clock} MHz; "
            "other ops are not counted"
        ),
    }


def fit(model_bytes: int, arena_bytes: int, profile: Profile) -> dict[str, Any]:
    """Compare flash and RAM needed with the profile's.

    Returns:
        {"fits", "flash": {...}, "ram": {...}}: each part with needed, available and its terms, in bytes.
    """
    hw, micro = profile.hardware, profile.micro
    runtime = int(micro.runtime_code_kb * KB)
    reserved = int(micro.reserved_ram_kb * KB)
    flash = {
        "needed": model_bytes + runtime, "available": hw.flash_kb * KB,
        "terms": {"model": model_bytes, "runtime code": runtime},
    }
    ram = {
        "needed": arena_bytes + reserved, "available": hw.ram_kb * KB,
        "terms": {"tensor arena": arena_bytes, "reserved": reserved},
    }
    for part in (flash, ram):
        part["fits"] = part["needed"] <= part["available"]
    return {"fits": flash["fits"] and ram["fits"], "flash": flash, "ram": ram}


def fit_failures(result: dict[str, Any], target: str, largest: dict[str, Any]) -> list[str]:
    """Say what does not fit, by how much, and what would help.

    Args:
        result: from `fit`.
        target: the profile's name.
        largest: {"weights": {"layer", "bytes"}, "activation": {"layer", "bytes"}} of the model.
    """
    failures = []
    for part, what in (("flash", "flash"), ("ram", "RAM")):
        p = result[part]
        if p["fits"]:
            continue
        terms = " + ".join(f"{name} {v / KB:.1f} KB" for name, v in p["terms"].items())
        if part == "flash":
            w = largest.get("weights") or {}
            help_ = (
                "channel pruning (build.prune.channels removes filters and units, and the weights "
                "of the layers that read them), fewer units or filters"
                + (f"; the largest weights are layer {w['layer']}'s, {w['bytes'] / KB:.1f} KB" if w else "")
            )
        else:
            a = largest.get("activation") or {}
            help_ = (
                "a smaller input (activations scale with its area), fewer filters in the early layers "
                "(build.prune.channels)"
                + (f"; the largest activation is layer {a['layer']}'s output, {a['bytes'] / KB:.1f} KB" if a else "")
            )
        failures.append(
            f"does not fit {target}: {what} needs {p['needed'] / KB:.1f} KB ({terms}), has "
            f"{p['available'] / KB:.0f} KB: over by {(p['needed'] - p['available']) / KB:.1f} KB. "
            f"What would help: {help_}"
        )
    return failures


def largest_parts(graph: Graph, keras_model: Any = None) -> dict[str, Any]:
    """Return the layers with the largest weight tensor and the largest activation, for advice."""
    from edgepack.micro.ops import layer_of

    result: dict[str, Any] = {}
    weights = [(t.nbytes, op) for op in graph.operators for t in (graph.tensors[i] for i in op.inputs if i >= 0) if t.constant]
    if weights:
        size, op = max(weights, key=lambda w: w[0])
        result["weights"] = {"layer": layer_of(graph, op, keras_model), "bytes": size}
    acts = [(graph.tensors[i].nbytes, op) for op in graph.operators for i in op.outputs]
    if acts:
        size, op = max(acts, key=lambda a: a[0])
        result["activation"] = {"layer": layer_of(graph, op, keras_model), "bytes": size}
    return result


def micro_summary(bundle_dir: Path) -> dict[str, Any]:
    """Return the static figures of a microcontroller bundle, for `edgepack bench`.

    Nothing is measured on the device: flash and RAM needed versus available, the tensor arena
    and how it was obtained, the latency estimate, and the TFLite Micro host check where the
    build had TFLite Micro.

    Raises:
        EdgepackError: not a bundle, or not a microcontroller bundle.
    """
    from edgepack.bundle import read_manifest
    from edgepack.errors import EdgepackError

    m = read_manifest(Path(bundle_dir))
    facts = m.facts.micro.model_dump(mode="json") if m.facts.micro else None
    if m.format.value != "tflite-micro" or not facts:
        raise EdgepackError(
            f"{bundle_dir}: a {m.format.value} bundle, not a microcontroller (tflite-micro) one",
            hint="micro_summary reads bundles built for a microcontroller target, e.g. --target cortex-m7",
        )
    f = m.fidelity
    host = facts.get("host_check")
    if host:
        host = dict(host, n_samples=f.n_samples, top1_agreement=f.top1_agreement,
                    max_abs_error=f.max_abs_error, accuracy_drop=f.accuracy_drop)
    return {
        "bundle": str(bundle_dir),
        "target": m.target,
        "status": m.status.value,
        "measured_on_device": False,
        "note": "static figures from the build, not measured on the device",
        "fits": facts["fit"]["fits"],
        "flash": facts["fit"]["flash"],
        "ram": facts["fit"]["ram"],
        "arena": facts["arena"],
        "latency": facts["latency"],
        "host_check": host,
        "ops": facts.get("ops", []),
    }
