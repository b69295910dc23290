"""Measure a TensorRT engine with trtexec: build or reuse it, time its loads and runs, check its answers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile

from .agentbase import AgentFailure, Spec, TRTEXEC_TIMEOUT_S, TRT_CHECK_CALLS
from .check import check_outputs, quantize, reference_calls, stats
from .gate import gate_settings
from .common import np, sha256_file
from .system import evict_page_cache
from .trtexec import TrtexecRunner, parse_trtexec, run_trtexec, trt_name


def trt_precision(args, manifest: dict, notes: list) -> tuple:
    """Return (precision, trtexec's precision flags) for the bundle; dynamic-range int8 is refused."""
    precision = manifest.get("precision") or "fp32"
    if precision == "dynamic-int8":
        raise AgentFailure(
            "TensorRT cannot run dynamic-range int8 ONNX models (DynamicQuantizeLinear / MatMulInteger): "
            "build the bundle with precision int8 (QDQ) or fp16"
        )
    if args.providers or args.delegates:
        notes.append("--providers / --delegates do not apply to trtexec; ignored")
    # --int8 alone would run the layers the QDQ graph leaves in float in fp32; --fp16 lets them use fp16.
    return precision, {"fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}.get(precision, [])


def manifest_specs(manifest: dict) -> tuple:
    """The manifest's inputs and outputs as Specs keyed by name (trtexec addresses tensors by name)."""

    def spec(d):
        return Spec(d.get("name"), list(d.get("shape") or []), d.get("dtype") or "float32", d.get("scale"), d.get("zero_point"), d.get("name"))

    in_specs = [spec(d) for d in manifest.get("inputs") or [] if isinstance(d, dict)]
    out_specs = [spec(d) for d in manifest.get("outputs") or [] if isinstance(d, dict)]
    if not in_specs or not out_specs:
        raise AgentFailure("manifest.json lists no inputs or outputs: trtexec needs their names")
    return in_specs, out_specs


def shape_args_for(in_specs: list, calls: list) -> list:
    """trtexec's --shapes for the dynamic inputs: the first reference call's shapes, else 1 for each dynamic axis."""
    shapes = []
    for k, s in enumerate(in_specs):
        if any(d is None for d in s.shape):
            dims = list(calls[0][k].shape) if calls else [d if d is not None else 1 for d in s.shape]
            shapes.append("%s:%s" % (trt_name(s.name), "x".join(str(int(d)) for d in dims)))
    return ["--shapes=" + ",".join(shapes)] if shapes else []


def build_engine(trtexec: str, model_path: str, cache_dir: str, version: str, precision: str, flags: list, shape_args: list,
                 notes: list) -> tuple:
    """Build the engine with trtexec into CACHE_DIR, or take it from there; return (engine path, cached, build seconds)."""
    os.makedirs(cache_dir, exist_ok=True)
    key = [sha256_file(model_path)[:32], "trt" + version, precision]
    if shape_args:
        key.append(hashlib.sha256(shape_args[0].encode("utf-8")).hexdigest()[:8])
    engine_path = os.path.join(cache_dir, "-".join(key) + ".engine")
    # The timing cache keeps TensorRT's kernel timings for the model: a rebuild (new flags, shapes) skips timing again.
    timing_path = os.path.join(cache_dir, "-".join(key[:2]) + ".timing")
    if os.path.isfile(engine_path):
        notes.append("TensorRT engine taken from the cache: %s" % engine_path)
        return engine_path, True, None
    part = "%s.part%d" % (engine_path, os.getpid())
    cmd = [trtexec, "--onnx=" + os.path.abspath(model_path), "--saveEngine=" + part, "--skipInference",
           "--timingCacheFile=" + timing_path] + flags + shape_args
    status, text = run_trtexec(cmd, TRTEXEC_TIMEOUT_S)
    if status != 0 and re.search(r"(?i)(unknown|unrecognized|invalid) (option|argument)\S*[^\n]*skipInference", text):
        # TensorRT before 8.4 spells it --buildOnly
        cmd[cmd.index("--skipInference")] = "--buildOnly"
        status, text = run_trtexec(cmd, TRTEXEC_TIMEOUT_S)
    built = parse_trtexec(text)
    if status != 0 or not os.path.isfile(part):
        if os.path.isfile(part):
            os.remove(part)
        raise AgentFailure(
            "trtexec (TensorRT %s) could not build an engine from %s: %s"
            % (version, os.path.basename(model_path), built["errors"][0] if built["errors"] else "exit status %d" % status)
        )
    os.replace(part, engine_path)
    notes.append("built the TensorRT engine (%s) and cached it as %s" % (" ".join(flags) or "fp32", engine_path))
    return engine_path, False, built["engine_build_s"]


def time_engine_loads(trtexec: str, engine_path: str, shape_args: list, cold_loads: int, notes: list) -> tuple:
    """Return (cold ms, warm ms, evicted): trtexec's deserialisation time, each in a fresh trtexec process."""
    load_cmd = [trtexec, "--loadEngine=" + engine_path, "--iterations=1", "--duration=0", "--warmUp=0"] + shape_args
    cold, warm, evicted = [], [], True
    for count, evict in ((cold_loads, True), (max(cold_loads, 1), False)):
        for _ in range(count):
            if evict:
                ok, note = evict_page_cache(engine_path)
                evicted = evicted and ok
                if note and note not in notes:
                    notes.append(note)
            status, text = run_trtexec(load_cmd, TRTEXEC_TIMEOUT_S)
            ms = parse_trtexec(text)["engine_load_ms"]
            if status == 0 and ms is not None:
                (cold if evict else warm).append(ms)
    return cold, warm, evicted


def time_engine_runs(args, trtexec: str, engine_path: str, shape_args: list, in_specs: list, calls: list, workdir: str) -> tuple:
    """Time the engine with trtexec on the first reference call (or its own inputs); return (figures, latency statistics)."""
    inputs = []
    if calls:
        for k, (s, array) in enumerate(zip(in_specs, calls[0])):
            path = os.path.join(workdir, "in_%d.bin" % k)
            np.ascontiguousarray(quantize(array, s)).tofile(path)
            inputs.append("%s:%s" % (trt_name(s.name), path))
    times_path = os.path.join(workdir, "times.json")
    warmup_ms = 200 if args.warmup else 0
    cmd = [trtexec, "--loadEngine=" + engine_path, "--iterations=%d" % max(args.runs, 1),
           "--duration=%g" % args.min_seconds, "--warmUp=%d" % warmup_ms,
           "--exportTimes=" + times_path, "--useSpinWait"] + shape_args
    if inputs:
        cmd.append("--loadInputs=" + ",".join(inputs))
    status, text = run_trtexec(cmd, TRTEXEC_TIMEOUT_S)
    figures = parse_trtexec(text)
    if status != 0:
        raise AgentFailure("trtexec could not run the engine: %s" % (figures["errors"][0] if figures["errors"] else "exit status %d" % status))
    try:
        with open(times_path, "r", encoding="utf-8") as f:
            samples = [float(t["latencyMs"]) for t in json.load(f) if isinstance(t, dict) and "latencyMs" in t]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise AgentFailure("trtexec wrote no readable --exportTimes file: %s" % exc)
    if not samples:
        raise AgentFailure("trtexec timed no inference")
    latency = stats(samples, figures["warmup_queries"] or 0)
    latency["method"] = (
        "trtexec --exportTimes: latencyMs of each inference (host-to-device copy + GPU compute + device-to-host copy) "
        "as trtexec timed it, after --warmUp=%d ms; no clipping" % warmup_ms
    )
    return figures, latency


def trtexec_memory(cached: bool) -> dict:
    """The memory figures trtexec allows: the peak RSS of its largest process."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    except (ImportError, OSError):
        peak = None
    return {
        "baseline_rss_mb": None,
        "peak_rss_mb": round(peak, 3) if peak is not None else None,
        "delta_mb": None,
        "method": "peak RSS of the largest trtexec process (getrusage RUSAGE_CHILDREN)%s; GPU memory not included"
        % ("" if cached else ", which includes the engine build"),
    }


def check_engine(report: dict, reference: dict, runner, in_specs: list, out_specs: list, calls: list, gate=None) -> None:
    """Check the engine's answers on at most TRT_CHECK_CALLS reference batches (one trtexec process each)."""
    notes = report["notes"]
    limited = reference
    batch = len(calls[0][0]) if calls else 1
    total = len(reference["in_0"]) if "in_0" in reference else 0
    if calls and len(calls) > TRT_CHECK_CALLS:
        keep = TRT_CHECK_CALLS * batch
        limited = dict((k, v[:keep]) for k, v in reference.items())
        notes.append("checked %d of %d reference samples through trtexec (one process per batch)" % (keep, total))
    try:
        report["check"] = check_outputs(runner, in_specs, out_specs, limited, notes, gate)
    except AgentFailure as exc:
        report["errors"].append("reference check failed: %s" % exc)


def measure_trtexec(args, report: dict, manifest: dict, model_path: str, reference, trtexec: str) -> None:
    """Build (or take from the cache) a TensorRT engine with trtexec, time it with trtexec, and
    turn trtexec's own figures into the report."""
    notes = report["notes"]
    precision, flags = trt_precision(args, manifest, notes)
    _, banner = run_trtexec([trtexec, "--help"], 120)
    version = parse_trtexec(banner)["tensorrt_version"] or "unknown"
    in_specs, out_specs = manifest_specs(manifest)
    calls = []
    if reference is not None:
        try:
            calls = reference_calls(reference, in_specs)[0]
        except AgentFailure:
            pass  # the check below reports why
    shape_args = shape_args_for(in_specs, calls)
    engine_path, cached, build_s = build_engine(trtexec, model_path, args.cache_dir, version, precision, flags, shape_args, notes)

    workdir = tempfile.mkdtemp(prefix="edgepack-trt-")
    try:
        cold, warm, evicted = time_engine_loads(trtexec, engine_path, shape_args, args.cold_loads, notes)
        figures, latency = time_engine_runs(args, trtexec, engine_path, shape_args, in_specs, calls, workdir)
        report["latency_ms"] = latency
        report["throughput_per_s"] = figures["throughput_qps"] if figures["throughput_qps"] else 1000.0 / latency["mean"]
        phases = {"engine_deserialize": float(np.median(warm))} if warm else {}
        if build_s is not None:
            phases = dict(engine_build=build_s * 1000.0, **phases)
        report["load"] = {
            "cold_ms": cold,
            "warm_ms": warm,
            "in_process_ms": figures["engine_load_ms"],
            "cold_evicted": (evicted and bool(cold)) if args.cold_loads else None,
            "phases_ms": phases or None,
            "method": "trtexec's 'Engine deserialized in' figure, each in a fresh trtexec process (after CUDA "
            "initialisation); cold after fsync + posix_fadvise(POSIX_FADV_DONTNEED) of the engine file. These are loads of "
            "the cached engine (the load-optimised form itself); engine_build, where this bench built it, is the load it spares",
        }
        report["runtime"] = {"name": "tensorrt", "version": version, "delegates": [], "providers": [], "threads": None, "nodes_by_provider": None}
        report["memory"] = trtexec_memory(cached)
        if reference is not None:
            check_engine(report, reference, TrtexecRunner(trtexec, engine_path, shape_args, workdir), in_specs, out_specs, calls, gate_settings(manifest))
        figures.pop("errors")
        figures.update(trtexec=trtexec, engine_path=engine_path, engine_cached=cached, flags=flags)
        figures["engine_build_s"] = build_s
        report["tensorrt"] = figures
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
