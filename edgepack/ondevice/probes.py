"""Load probes: each load timed in a fresh process of this agent (cold, warm, with phases, or making a form)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from .agentbase import AgentFailure, FORM_FILES, GPU_PROVIDERS, ONNX_FORMS, PROBE_TIMEOUT_S, StdoutGuard, describe, first_line
from .bundle import pick_engine, read_bundle
from .check import check_outputs, match
from .common import NUMPY_ERROR, np
from .ort import OrtRuntime
from .system import evict_page_cache
from .tflite import LiteRtCompiled, TFLiteRuntime


def make_runtime(engine: str, args, manifest):
    if engine == "tflite":
        return TFLiteRuntime(args)
    if engine == "tensorrt":  # trtexec is not on this device: ONNX Runtime, TensorRT provider first
        args.providers = args.providers or list(GPU_PROVIDERS)
    return OrtRuntime(args, manifest)


def timed_load(runtime, model_path: str, load=None) -> float:
    """Load the model (LOAD: how, default runtime.load) and return the ms it took; a rejected model is an AgentFailure."""
    t0 = time.perf_counter_ns()
    try:
        (load or (lambda: runtime.load(model_path)))()
    except (MemoryError, KeyboardInterrupt):
        raise
    except AgentFailure:
        raise
    except Exception as exc:
        raise AgentFailure(
            "%s %s rejected %s: %s" % (runtime.name, runtime.version, os.path.basename(model_path), first_line(exc))
        )
    return (time.perf_counter_ns() - t0) / 1e6


def form_loader(runtime, manifest: dict, model_path: str, form: str, form_dir, profile_dir=None):
    """Return (the runtime that runs FORM, how to load it, the files the load reads) for a load probe."""
    if form == "plain":
        if isinstance(runtime, OrtRuntime):
            return runtime, lambda: runtime.load(model_path, profile_dir=profile_dir), [model_path]
        return runtime, lambda: runtime.load(model_path), [model_path]
    if form not in FORM_FILES or not form_dir:
        raise AgentFailure("bad arguments: --form %s needs a known form and --form-dir" % form)
    path = os.path.join(form_dir, FORM_FILES[form])
    files = [os.path.join(form_dir, n) for n in sorted(os.listdir(form_dir)) if n.startswith(FORM_FILES[form])]
    if form == "xnnpack-weight-cache":
        compiled = LiteRtCompiled(runtime, manifest)
        return compiled, lambda: compiled.load(model_path, path), [model_path] + files
    return runtime, lambda: runtime.load(path, optimise=False, ort_format=form == "ort-format", profile_dir=profile_dir), files


def load_probe(args, guard: StdoutGuard) -> int:
    """Child mode: import the runtime, optionally evict the files, time one load of --form (or make it), print it."""
    try:
        if np is None:
            raise AgentFailure("numpy is not importable: %s" % NUMPY_ERROR)
        manifest, model_path, reference = read_bundle(args.bundle, check=False)  # the agent that started it has checked
        t0 = time.perf_counter_ns()
        runtime = make_runtime(pick_engine(model_path, args.engine, manifest), args, manifest)
        import_ms = (time.perf_counter_ns() - t0) / 1e6
        if args.make_form:
            return make_form_probe(args, guard, runtime, manifest, model_path)
        profile_dir = os.path.dirname(os.path.abspath(args.bundle)) if args.phases else None
        active, load, files = form_loader(runtime, manifest, model_path, args.form, args.form_dir, profile_dir)
        import_ms += getattr(active, "import_ms", 0.0)
        evicted, notes = True, []
        for path in files if args.evict else []:
            ok, note = evict_page_cache(path)
            evicted = evicted and ok
            if note:
                notes.append(note)
        load_ms = timed_load(active, model_path, load)
        result = {"ok": True, "load_ms": load_ms, "import_ms": import_ms, "evicted": evicted and bool(args.evict),
                  "note": notes[0] if notes else None}
        if args.phases or args.check:
            in_specs = match(manifest.get("inputs"), active.inputs())
            out_specs = match(manifest.get("outputs"), active.outputs())
            zeros = [np.zeros([d if d is not None else 1 for d in s.shape], dtype=s.dtype) for s in in_specs]
            t0 = time.perf_counter_ns()
            active.infer(active.bind(in_specs, zeros), out_specs)
            first_ms = (time.perf_counter_ns() - t0) / 1e6
            if args.phases:
                result["phases_ms"] = dict(active.end_phases(), first_inference=first_ms)
            if args.check and reference is not None:
                result["check"] = check_outputs(active, in_specs, out_specs, reference, [])
        guard.emit(result)
        return 0
    except BaseException as exc:
        guard.emit({"ok": False, "error": describe(exc)})
        return 1


def make_form_probe(args, guard: StdoutGuard, runtime, manifest: dict, model_path: str) -> int:
    """Child mode: make --form in --form-dir (in a process of its own: the agent's memory figures stay the model's)."""
    t0 = time.perf_counter_ns()
    if args.form == "xnnpack-weight-cache":
        compiled = LiteRtCompiled(runtime, manifest)
        path = os.path.join(args.form_dir, FORM_FILES[args.form])
        compiled.load(model_path, path)
        specs = compiled.inputs()
        compiled.infer(compiled.bind(specs, [np.zeros(s.shape, dtype=s.dtype) for s in specs]), compiled.outputs())
        compiled.model = None  # the cache file is complete once the model is released
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise AgentFailure("ai_edge_litert %s wrote no XNNPACK weight cache" % runtime.version)
    elif args.form in ONNX_FORMS and isinstance(runtime, OrtRuntime):
        runtime.make_form(model_path, args.form, args.form_dir)
    else:
        raise AgentFailure("bad arguments: cannot make form %s for this runtime" % args.form)
    guard.emit({"ok": True, "make_ms": (time.perf_counter_ns() - t0) / 1e6})
    return 0


def probe_command(args, *extra) -> list:
    """The command line of a probe: this agent, the bundle, the runtime settings, EXTRA."""
    cmd = [sys.executable, os.path.abspath(__file__), args.bundle, "--load-probe"]
    if args.engine:
        cmd += ["--engine", args.engine]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.delegates:
        cmd += ["--delegates", ",".join(args.delegates)]
    if args.providers:
        cmd += ["--providers", ",".join(args.providers)]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    return cmd + list(extra)


def run_probe(cmd: list) -> dict:
    """Run one probe; return its result ({"ok": False, "error": ...} where it failed).

    Raises:
        AgentFailure: the probe died of a signal (this process would die the same way loading the model).
    """
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "load probe took longer than %d s" % PROBE_TIMEOUT_S}
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = None
    if proc.returncode < 0:
        raise AgentFailure("the runtime crashed (signal %d) loading the model" % -proc.returncode)
    if not isinstance(result, dict) or not result.get("ok"):
        error = result.get("error") if isinstance(result, dict) else None
        if not error:
            tail = [l for l in proc.stderr.decode("utf-8", "replace").splitlines() if l.strip()]
            error = "load probe exited %d: %s" % (proc.returncode, tail[-1] if tail else "no output")
        return {"ok": False, "error": error}
    return result


def probe_loads(args, count: int, evict: bool, *extra) -> tuple:
    """Time COUNT loads, each in a fresh process; return (results, evicted, notes, error)."""
    results, evicted, notes = [], True, []
    for _ in range(count):
        result = run_probe(probe_command(args, *(list(extra) + (["--evict"] if evict else []))))
        if not result.get("ok"):
            return results, False, notes, result.get("error")
        results.append(result)
        evicted = evicted and bool(result.get("evicted"))
        if result.get("note") and result["note"] not in notes:
            notes.append(result["note"])
    return results, evicted and count > 0, notes, None


def median_phases(results: list):
    """Each phase's median over the probes that reported phases (None when none did)."""
    found = [r["phases_ms"] for r in results if isinstance(r.get("phases_ms"), dict)]
    if not found:
        return None
    names = []
    for phases in found:
        names += [n for n in phases if n not in names]
    return dict((n, float(np.median([p[n] for p in found if n in p]))) for n in names)


def median_of(results: list, key: str):
    values = [r[key] for r in results if isinstance(r.get(key), (int, float))]
    return float(np.median(values)) if values else None
