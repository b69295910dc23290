"""The measurement: loads, latency, memory and the reference check of one bundle."""

from __future__ import annotations

import os
import time

from .agentbase import AgentFailure, TRTEXEC_PATHS, first_line
from .bundle import load_cache_sha, pick_engine, read_bundle
from .check import check_outputs, match, quantize, reference_calls, stats, timed_runs
from .common import LOAD_CACHE_DIR, NUMPY_ERROR, np, usable_cores
from .forms import ANSWERS_OK, decide_use, first_answers, measure_optimized
from .gate import gate_settings
from .inside import record_gpu_memory, record_operators, record_sustained, unified_baseline
from .loadcache import checked_entry, prepare_load_cache, record_checked_artifact, write_meta
from .probes import make_runtime, median_of, median_phases, probe_loads, timed_load
from .system import reset_peak, rss_mb, system_info
from .tensorrt import measure_trtexec
from .trtexec import find_trtexec


def measure_loads(args, report: dict, manifest: dict, model_path: str, engine: str, runtime) -> None:
    """Time the plain load in fresh processes (cold, warm with its phases), then the load-optimised form beside it."""
    notes = report["notes"]
    # Fresh processes before this one maps the model: a mapping would pin its pages in the cache.
    cold, cold_evicted, cold_notes, error = probe_loads(args, args.cold_loads, True)
    warm = []
    if error is None:
        warm, _, _, error = probe_loads(args, max(args.cold_loads, 1), False, "--phases")
    notes.extend(cold_notes)
    report["load"] = {
        "cold_ms": [r["load_ms"] for r in cold],
        "warm_ms": [r["load_ms"] for r in warm],
        "in_process_ms": None,
        "cold_evicted": cold_evicted if args.cold_loads else None,
        "phases_ms": median_phases(warm),
        "import_ms": median_of(warm, "import_ms"),
        "optimized": None,
        "first_answer": None,
        "method": (
            "perf_counter_ns around model load (%s) after the runtime import; cold and warm each in a fresh process, cold "
            "after fsync + posix_fadvise(POSIX_FADV_DONTNEED) of the files it reads; phases_ms: medians over the warm loads%s, "
            "first_inference on zeros right after the load"
            % ("reading the file, building the interpreter on it, allocate_tensors" if engine == "tflite" else "InferenceSession creation",
               "" if engine == "tflite" else ", session creation split by ONNX Runtime's profiler (model_loading, session_initialization)")
        ),
    }
    if error is not None:
        timed_load(runtime, model_path)  # a model the runtime rejects: its own reason, rather than the probe's
        report["errors"].append("load probe failed: %s" % error)
        return
    if args.load_cache == "off":
        notes.append("runtime.load_cache is off: no load-optimised form made or measured")
        return
    if os.path.islink(args.load_cache_dir):  # its entries are removed and rewritten: never in a folder it points to
        report["errors"].append("the load cache %s is a symbolic link: the agent removes and writes files there, so it uses "
                                "only a real directory (remove the link, or pass --load-cache-dir)" % args.load_cache_dir)
        return
    prepared = prepare_load_cache(args, engine, runtime, load_cache_sha(manifest, model_path), notes)
    if os.path.isdir(args.load_cache_dir):  # never made for this record alone
        record_checked_artifact(args.load_cache_dir, model_path, load_cache_sha(manifest, model_path), notes)
    if prepared is not None:
        report["load"]["optimized"] = measure_optimized(args, *prepared, notes=notes)


def measure(args, report: dict) -> None:
    """Fill REPORT; raise on the first failure that stops the measurement."""
    notes = report["notes"]
    report["system"] = system_info()
    if np is None:
        raise AgentFailure("numpy is not importable: %s" % NUMPY_ERROR)
    manifest, model_path, reference = read_bundle(args.bundle)
    engine = pick_engine(model_path, args.engine, manifest)
    if args.threads is None:
        args.threads = usable_cores()
    workdir = os.path.dirname(os.path.abspath(args.bundle))
    if args.cache_dir is None:
        args.cache_dir = os.path.join(workdir, "engine-cache")
    args.load_cache_dir = os.path.abspath(args.load_cache_dir or os.path.join(workdir, LOAD_CACHE_DIR))
    if engine == "tensorrt":
        trtexec = find_trtexec()
        if trtexec is not None:
            return measure_trtexec(args, report, manifest, model_path, reference, trtexec)
        notes.append(
            "trtexec not found (PATH, %s): measured the .onnx with ONNX Runtime instead, TensorRT provider first"
            % ", ".join(TRTEXEC_PATHS)
        )
    runtime = make_runtime(engine, args, manifest)
    notes.extend(runtime.notes)
    runtime.notes = notes  # the runtime's notes reach the report even when a later step fails
    report["runtime"] = runtime.info()  # refined once the model is loaded

    measure_loads(args, report, manifest, model_path, engine, runtime)
    load = report["load"]
    first_answer = first_answers(args, load.get("optimized"), notes, engine) if not report["errors"] else None
    load["first_answer"] = first_answer
    gpu_baseline = unified_baseline(args.sysfs_root)  # a Jetson's unified memory before the load
    bound, out_specs = measure_in_process(args, report, runtime, manifest, model_path, reference)
    record_gpu_memory(report, runtime, gpu_baseline, args.sysfs_root)  # before a second session grows it
    if hasattr(runtime, "placement"):  # after the memory figures: a second session must not inflate them
        record_placement(runtime, model_path, bound, out_specs, notes)
    record_operators(args, report, runtime, engine, model_path, bound, out_specs)
    record_sustained(args, report, runtime, bound, out_specs)
    report["runtime"] = runtime.info()
    if load.get("optimized") is not None:
        record_use(report, runtime, load_cache_sha(manifest, model_path))


def measure_in_process(args, report: dict, runtime, manifest: dict, model_path: str, reference) -> tuple:
    """Load in this process, time the first inference and the runs, check the answers, read the memory figures.

    Returns:
        (the timed inputs as the runtime takes them, the output specs): what the node placement runs.
    """
    notes, load = report["notes"], report["load"]
    # The model's memory: the peak is reset (or read) around each step, so the reference check's
    # arrays are never counted as the model's.
    reset = reset_peak()
    baseline_mb, baseline_method = rss_mb("VmRSS")
    load["in_process_ms"] = timed_load(runtime, model_path)  # raises the runtime's own reason on a bad model
    load_peak_mb, peak_method = rss_mb("VmHWM")
    loaded_mb, _ = rss_mb("VmRSS")

    in_specs = match(manifest.get("inputs"), runtime.inputs())
    out_specs = match(manifest.get("outputs"), runtime.outputs())
    calls = []
    if reference is not None:
        try:
            calls = reference_calls(reference, in_specs)[0]
        except AgentFailure:
            pass  # timed runs use zeros; the check below reports why
    else:
        notes.append("bundle has no reference.npz: timed runs use zeros and the check is skipped")
    if calls:
        timed_input = [quantize(a, s) for a, s in zip(calls[0], in_specs)]
    else:
        timed_input = [np.zeros([d if d is not None else 1 for d in s.shape], dtype=s.dtype) for s in in_specs]
    bound = runtime.bind(in_specs, timed_input)

    t0 = time.perf_counter_ns()
    runtime.infer(bound, out_specs)
    report["first_inference_ms"] = (time.perf_counter_ns() - t0) / 1e6
    for _ in range(args.warmup):
        runtime.infer(bound, out_specs)
    samples = timed_runs(runtime, bound, out_specs, args.runs, args.min_seconds, notes)
    report["latency_ms"] = stats(samples, args.warmup)
    report["throughput_per_s"] = 1000.0 / report["latency_ms"]["mean"] if report["latency_ms"]["mean"] > 0 else None
    peak_mb, _ = rss_mb("VmHWM")

    check_reset = reset_peak()
    if reference is not None:
        try:
            report["check"] = check_outputs(runtime, in_specs, out_specs, reference, notes, gate_settings(manifest))
        except AgentFailure as exc:
            report["errors"].append("reference check failed: %s" % exc)
    check_peak_mb = rss_mb("VmHWM")[0] if check_reset and reference is not None else None

    def minus(a, b):
        return round(a - b, 3) if a is not None and b is not None else None

    report["memory"] = {
        "baseline_rss_mb": baseline_mb,
        "peak_rss_mb": peak_mb,
        "delta_mb": minus(peak_mb, baseline_mb),
        "load_mb": minus(load_peak_mb, baseline_mb),
        "inference_mb": minus(peak_mb, loaded_mb),
        "check_peak_rss_mb": check_peak_mb,
        "peak_reset": reset,
        "method": (
            "baseline: %s right before the in-process load (runtime imported); load_mb: %s after the load minus the baseline; "
            "peak_rss_mb: %s after the load, the first inference, %d warm-up and %d timed runs, read before the reference "
            "check; delta_mb: peak minus baseline; inference_mb: peak minus VmRSS after the load; %s"
            % (baseline_method, peak_method, peak_method, args.warmup, len(samples),
               "the peak was reset to the current RSS (/proc/self/clear_refs) at the baseline and before the check "
               "(check_peak_rss_mb)" if reset else
               "/proc/self/clear_refs was not writable: the peaks may include the agent's own start-up (the check is not included)")
        ),
    }
    return bound, out_specs


def record_placement(runtime, model_path: str, bound, out_specs, notes: list) -> None:
    """Count the kernels per execution provider with ONNX Runtime's profiler (a note where it cannot)."""
    try:
        runtime.nodes_by_provider = runtime.placement(model_path, bound, out_specs)
        notes.append(
            "nodes_by_provider: kernels per execution provider from ONNX Runtime's profiler over one inference, "
            "after graph optimisation (fused QDQ shows as QLinearConv, QGemm, ...; TensorRT subgraphs as one kernel each)"
        )
        off_cpu = [p for p in runtime.nodes_by_provider if p != "CPUExecutionProvider"]
        if runtime.providers[0] != "CPUExecutionProvider" and "CPUExecutionProvider" in runtime.nodes_by_provider and off_cpu:
            notes.append("%d kernels fell back to CPUExecutionProvider" % sum(runtime.nodes_by_provider["CPUExecutionProvider"].values()))
    except Exception as exc:
        notes.append("node placement not available: %s" % first_line(exc))


def record_use(report: dict, runtime, sha: str) -> None:
    """Decide whether the loader uses the optimised form, and record it in the form's meta.json."""
    notes, load = report["notes"], report["load"]
    optimized = load["optimized"]
    use, why = decide_use(load, report.get("check"))
    optimized["used_by_loader"] = use
    notes.append("the loader (edgepack_runtime.py) %s the %s form: %s" % ("uses" if use else "does not use", optimized["form"], why))
    try:
        meta = checked_entry(optimized["path"], sha, runtime, [optimized["form"]])[0]
        if meta is not None:
            meta.update(use=use, why=why, answers_ok=ANSWERS_OK in why, check=optimized.get("check"),
                        measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            write_meta(optimized["path"], meta)
        else:  # the entry changed under the bench: the loader will not find it usable
            optimized["used_by_loader"] = False
    except OSError as exc:
        notes.append("could not record the measurement in %s: %s" % (optimized["path"], exc.strerror or exc))
