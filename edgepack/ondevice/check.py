"""Inputs and outputs: quantization, the reference check, latency samples and their statistics."""

from __future__ import annotations

import time

from .agentbase import AgentFailure, MAX_RUNS, Spec
from .common import np
from .gate import judge_outputs


def match(manifest_specs, runtime_specs) -> list:
    """Runtime tensor for each manifest (= reference) position: by name, else by position."""
    names = [s.get("name") if isinstance(s, dict) else None for s in manifest_specs or []]
    by_name = dict((s.name, s) for s in runtime_specs)
    if len(names) == len(runtime_specs) and all(n in by_name for n in names) and len(set(names)) == len(names):
        return [by_name[n] for n in names]
    return list(runtime_specs)


def quantize(x, spec: Spec):
    if spec.dtype.kind in "iu" and spec.scale:
        info = np.iinfo(spec.dtype)
        q = np.round(np.asarray(x, dtype=np.float64) / spec.scale + (spec.zero_point or 0))
        return np.clip(q, info.min, info.max).astype(spec.dtype)
    return np.asarray(x).astype(spec.dtype)


def dequantize(y, spec: Spec):
    y = np.asarray(y)
    if y.dtype.kind in "iu" and spec.scale:
        return (y.astype(np.float64) - (spec.zero_point or 0)) * spec.scale
    return y.astype(np.float64)


def reference_calls(reference, in_specs):
    """Split the reference inputs into the calls the model takes; return (calls, n_samples, per_sample)."""
    arrays = []
    i = 0
    while "in_%d" % i in reference:
        arrays.append(np.asarray(reference["in_%d" % i]))
        i += 1
    if not arrays:
        return [], 0, False
    if len(arrays) != len(in_specs):
        raise AgentFailure("reference.npz has %d inputs; the model takes %d" % (len(arrays), len(in_specs)))
    n = arrays[0].shape[0] if arrays[0].ndim else 1
    spec0, a0 = in_specs[0], arrays[0]
    per_sample = a0.ndim == len(spec0.shape) + 1  # reference stacks samples the model takes without a batch axis
    for i, (a, spec) in enumerate(zip(arrays, in_specs)):
        want = spec.shape if per_sample else spec.shape[1:]
        fits = a.ndim >= 1 and a.ndim == len(spec.shape) + (1 if per_sample else 0) and a.shape[0] == n
        if not fits or any(w is not None and w != g for w, g in zip(want, a.shape[1:])):
            raise AgentFailure("reference in_%d has shape %s; the model takes %s" % (i, list(a.shape), spec.shape))
    if per_sample:
        return [[a[j] for a in arrays] for j in range(n)], n, True
    # A dynamic batch dimension runs one sample per call: latency is batch-1 latency, as on a
    # TFLite model (whose batch is 1), not the time for the whole reference set at once.
    batch = (spec0.shape[0] if spec0.shape else None) or 1
    if batch == n:
        return [arrays], n, False
    calls = [[a[j:j + batch] for a in arrays] for j in range(0, n - n % batch, batch)]
    return calls, len(calls) * batch, False


def check_outputs(runtime, in_specs, out_specs, reference, notes, gate=None) -> dict:
    """Compare the runtime's answers on the reference inputs with the host's; judge them by GATE (`gate.gate_settings`) where given."""
    calls, n, per_sample = reference_calls(reference, in_specs)
    if not calls:
        notes.append("reference.npz has no inputs; check skipped")
        return None
    total = reference["in_0"].shape[0] if reference["in_0"].ndim else 1
    if n < total:
        notes.append("checked %d of %d reference samples: the model takes batches of %d" % (n, total, in_specs[0].shape[0]))
    collected = [[] for _ in out_specs]
    for arrays in calls:
        bound = runtime.bind(in_specs, [quantize(a, s) for a, s in zip(arrays, in_specs)])
        for k, y in enumerate(runtime.infer(bound, out_specs)):
            collected[k].append(dequantize(y, out_specs[k]))
    max_err, abs_sum, count, agree, rows = 0.0, 0.0, 0, 0, 0
    wants, gots, indices = [], [], []
    for k, spec in enumerate(out_specs):
        key = "out_%d" % k
        if key not in reference:
            continue
        want = np.asarray(reference[key], dtype=np.float64)[:n]
        got = np.stack(collected[k]) if per_sample else np.concatenate([np.atleast_1d(c) for c in collected[k]])
        if got.size != want.size:
            raise AgentFailure("output %d has %d values; reference %s has %d" % (k, got.size, key, want.size))
        got = got.reshape(want.shape)
        err = np.abs(got - want)
        if not np.all(np.isfinite(err)):
            raise AgentFailure("output %d holds NaN or inf on the reference inputs" % k)
        wants.append(want)
        gots.append(got)
        indices.append(k)
        max_err = max(max_err, float(err.max()) if err.size else 0.0)
        abs_sum += float(err.sum())
        count += err.size
        if want.ndim >= 1 and want.shape[-1] > 1:
            agree += int(np.sum(np.argmax(got, axis=-1) == np.argmax(want, axis=-1)))
            rows += int(want.size // want.shape[-1])
    found = {
        "n_samples": n,
        "max_abs_error": max_err if count else None,
        "mean_abs_error": abs_sum / count if count else None,
        "top1_agreement": agree / float(rows) if rows else None,
    }
    if gate is not None and wants:
        found.update(judge_outputs(wants, gots, gate, indices))
    return found


def stats(samples: list, warmup: int) -> dict:
    a = np.asarray(samples, dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
    return {
        "samples": samples,
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
        "warmup": warmup,
        "runs": len(samples),
        "method": "perf_counter_ns around one inference call (set inputs, invoke, read outputs); no clipping",
    }


def timed_runs(runtime, bound, out_specs, runs: int, min_seconds: float, notes) -> list:
    samples = []
    deadline = time.perf_counter_ns() + int(min_seconds * 1e9)
    while len(samples) < max(runs, 1) or time.perf_counter_ns() < deadline:
        if len(samples) >= MAX_RUNS:
            notes.append("stopped at %d timed runs before --min-seconds had passed" % MAX_RUNS)
            break
        t0 = time.perf_counter_ns()
        runtime.infer(bound, out_specs)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples
