"""Measure a bundle on this device and print one JSON report.

This file is pushed to the device and run with the device's own Python (3.8 or newer). It
needs only the standard library, numpy and whichever runtime is installed; it never imports
edgepack. The host validates the report with ``edgepack.agent.protocol``: keep the two in sync.

Usage:
    python edgepack_agent.py BUNDLE_DIR [--runs N] [--warmup N] [--min-seconds S]
        [--cold-loads N] [--threads N] [--engine tflite|onnxruntime|tensorrt]
        [--delegates a,b] [--providers A,B] [--cache-dir DIR]
        [--load-cache auto|off] [--load-cache-dir DIR]

``--engine tensorrt`` builds a TensorRT engine from the .onnx artifact with trtexec (cached in
--cache-dir by the model's sha256 and the TensorRT version, with a timing cache beside it) and
reports trtexec's own figures; without trtexec on the device it measures with ONNX Runtime
instead, with a note.

Load time: every load is timed in a fresh process (cold: the files evicted from the page cache),
with its phases (``load.phases_ms``). With ``--load-cache auto`` the agent also makes the
runtime's load-optimised form of the model in --load-cache-dir (default ``load-cache`` beside the
bundle, in the device workdir): ONNX Runtime's graph optimised once here and saved (as ONNX with
its weights in a file it maps, or in ORT format, whichever loads faster), or LiteRT's XNNPACK
weight cache. An entry is keyed by the model's sha256 and the runtime's name and version, checked
file by file (sha256) before each use and rebuilt when it does not match. The agent measures the
form beside the plain load (``load.optimized``), checks its answers against the reference, and
measures the time from import to the first answer with the bundle's loader (edgepack_runtime.py).
The layout of the cache is shared with edgepack_runtime.py, which uses an entry the agent marked
``use``: keep the two in sync.

stdout carries exactly one JSON document and nothing else: file descriptor 1 is pointed at
stderr while runtimes are imported and used (their C++ code may print), and the report is
written to the saved original at the end. Exit status 0 when ``ok``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

try:
    import numpy as np
except ImportError as _exc:  # reported as ok:false by main()
    np = None
    NUMPY_ERROR = str(_exc)

PROTOCOL_VERSION = 1
MAX_RUNS = 100000
# The same limits as the host's profile schema (edgepack.profile.schema.BENCH_LIMITS).
LIMITS = {"runs": MAX_RUNS, "warmup": 10000, "min_seconds": 3600.0, "cold_loads": 100}
PROBE_TIMEOUT_S = 600
ENGINES = ("tflite", "onnxruntime", "tensorrt")
SUFFIX_ENGINE = {".tflite": "tflite", ".onnx": "onnxruntime"}
SUFFIX_ENGINES = {".tflite": ("tflite",), ".onnx": ("onnxruntime", "tensorrt")}
GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
# JetPack installs trtexec here, off PATH.
TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")
TRTEXEC_TIMEOUT_S = 3600  # an engine build on a small Jetson takes minutes
TRT_CHECK_CALLS = 4  # reference batches checked through trtexec (one process each)
# Where a delegate name is not a path, the libraries to try, in order.
DELEGATE_LIBRARIES = {
    "gpu": ["libtensorflowlite_gpu_delegate.so", "libtensorflowlite_gpu_gl.so"],
    "edgetpu": ["libedgetpu.so.1"],
}
# The load cache (shared with edgepack_runtime.py): <load-cache>/<entry_name(...)>/meta.json + the form's files.
CACHE_FORMAT = 1
LOAD_CACHE_DIR = "load-cache"
META = "meta.json"
STAGING_STALE_S = 3600  # a staging directory untouched this long belongs to an agent that was killed
# The forms per engine, each only where the device's runtime has it.
ONNX_FORMS = ("onnx-optimized", "ort-format")
TFLITE_FORMS = ("xnnpack-weight-cache",)
FORM_FILES = {"onnx-optimized": "model.optimized.onnx", "ort-format": "model.ort", "xnnpack-weight-cache": "model.xnnpack-cache"}
# Time to first answer: the app's other start-up work (a camera, a connection), stood in for by waiting.
STARTUP_WORK_MS = 200.0
FIRST_ANSWER_MARK = "EDGEPACK-FIRST-ANSWER "
LOADER = "edgepack_runtime.py"
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class AgentFailure(Exception):
    """A reason the measurement cannot go on; it becomes one entry of ``errors``."""


# ---------------------------------------------------------------- stdout and arguments


class StdoutGuard:
    """Keep fd 1 for the report alone: everything else written to it lands on stderr."""

    def __init__(self):
        sys.stdout.flush()
        self.fd = os.dup(1)
        os.dup2(2, 1)

    def emit(self, doc: dict) -> None:
        sys.stdout.flush()
        data = (json.dumps(doc, allow_nan=False) + "\n").encode("utf-8")
        while data:
            data = data[os.write(self.fd, data):]


class ArgParser(argparse.ArgumentParser):
    def error(self, message):
        raise AgentFailure("bad arguments: " + message)


def parse_args(argv: list) -> argparse.Namespace:
    p = ArgParser(prog="edgepack_agent.py", description="Measure an edgepack bundle on this device.")
    p.add_argument("bundle")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--cold-loads", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="default: all usable cores")
    p.add_argument("--engine", choices=ENGINES, default=None, help="default: from the artifact's suffix")
    p.add_argument("--delegates", default="", help="TFLite delegates: xnnpack, gpu, edgetpu or a library path")
    p.add_argument("--providers", default="", help="ONNX Runtime execution providers, in order")
    p.add_argument("--cache-dir", default=None, help="TensorRT engine cache [default: engine-cache beside the bundle]")
    p.add_argument("--load-cache", choices=("auto", "off"), default="auto", help="make and measure the load-optimised form (auto) or not")
    p.add_argument("--load-cache-dir", default=None, help="load-optimised forms [default: load-cache beside the bundle]")
    p.add_argument("--load-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--evict", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--form", default="plain", help=argparse.SUPPRESS)  # load probes: plain or a form in --form-dir
    p.add_argument("--form-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--make-form", action="store_true", help=argparse.SUPPRESS)  # a probe that makes --form in --form-dir
    p.add_argument("--phases", action="store_true", help=argparse.SUPPRESS)  # a probe that reports load phases
    p.add_argument("--check", action="store_true", help=argparse.SUPPRESS)  # a probe that checks the form's answers
    p.add_argument("--exit-with-stdin", action="store_true", help="end when stdin closes (the host went away)")
    args = p.parse_args(argv)
    for name in ("runs", "warmup", "cold_loads", "min_seconds"):
        value = getattr(args, name)
        if not 0 <= value <= LIMITS[name]:  # NaN fails both comparisons
            raise AgentFailure("bad arguments: --%s must be between 0 and %g" % (name.replace("_", "-"), LIMITS[name]))
    if args.threads is not None and args.threads < 1:
        raise AgentFailure("bad arguments: --threads must be >= 1")
    args.delegates = split_list(args.delegates)
    args.providers = split_list(args.providers)
    return args


def split_list(text: str) -> list:
    return [item.strip() for item in text.split(",") if item.strip()]


# ---------------------------------------------------------------- bundle


def read_bundle(bundle: str, check: bool = True):
    """Return (manifest dict, model path, reference dict or None); with CHECK, every file is checked against the manifest."""
    if not os.path.isdir(bundle):
        raise AgentFailure("no such bundle directory: %s" % bundle)
    manifest_path = os.path.join(bundle, "manifest.json")
    if not os.path.isfile(manifest_path):
        raise AgentFailure("not a bundle (no manifest.json): %s" % bundle)
    try:
        with open(manifest_path, "r", encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise AgentFailure("unreadable manifest.json: %s" % exc)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifact"), str):
        raise AgentFailure("manifest.json names no artifact")
    model_path = os.path.join(bundle, manifest["artifact"])
    if not os.path.isfile(model_path):
        raise AgentFailure("artifact %s is missing from the bundle" % manifest["artifact"])
    if check:
        check_files(bundle, manifest.get("files") or [])
    reference = None
    ref_path = os.path.join(bundle, "reference.npz")
    if os.path.isfile(ref_path):
        try:
            with np.load(ref_path, allow_pickle=False) as z:
                reference = {k: z[k] for k in z.files}
        except Exception as exc:
            raise AgentFailure("unreadable reference.npz: %s" % exc)
    return manifest, model_path, reference


def check_files(bundle: str, entries) -> None:
    """Check every file the manifest lists against its size and sha256, as it arrived on the device."""
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or os.path.basename(entry["path"]) != entry["path"]:
            raise AgentFailure("manifest.json lists a file it cannot name: %r" % (entry,))
        path = os.path.join(bundle, entry["path"])
        if not os.path.isfile(path):
            raise AgentFailure("%s is missing from the bundle" % entry["path"])
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if os.path.getsize(path) != entry.get("bytes") or h.hexdigest() != entry.get("sha256"):
            raise AgentFailure("%s does not match the manifest (its size or sha256 changed after the build)" % entry["path"])


def pick_engine(model_path: str, requested, manifest=None) -> str:
    suffix = os.path.splitext(model_path)[1].lower()
    implied = SUFFIX_ENGINE.get(suffix)
    if requested and implied and requested not in SUFFIX_ENGINES.get(suffix, ()):
        raise AgentFailure("--engine %s cannot load a %s artifact (use --engine %s)" % (requested, suffix, implied))
    if not requested and manifest is not None:  # the engine the bundle's profile names, where it loads this artifact
        profiled = ((manifest.get("profile") or {}).get("runtime") or {}).get("engine")
        requested = profiled if profiled in SUFFIX_ENGINES.get(suffix, ()) else None
    engine = requested or implied
    if engine is None:
        raise AgentFailure("cannot tell the runtime for artifact %s: pass --engine" % os.path.basename(model_path))
    return engine


# ---------------------------------------------------------------- system and memory


def system_info() -> dict:
    info = {
        "arch": platform.machine() or None,
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable_cores(),
        "memory_total_mb": memory_total_mb(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    return info


def cpu_model():
    fields = {}
    try:
        with open("/proc/cpuinfo", "r", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and value.strip():
                    fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    for key in ("model name", "model", "hardware", "cpu model", "processor"):
        value = fields.get(key)
        if value and not value.isdigit():
            return value
    try:  # boards without a model line (Jetson, some Pis) name themselves in the device tree
        with open("/sys/firmware/devicetree/base/model", "rb") as f:
            return f.read().rstrip(b"\0").decode("utf-8", "replace").strip() or None
    except OSError:
        pass
    return platform.processor() or None


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def memory_total_mb():
    value = proc_kb("/proc/meminfo", "MemTotal")
    if value is not None:
        return round(value / 1024.0, 1)
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1048576.0, 1)
    except (ValueError, OSError, AttributeError):
        return None


def proc_kb(path: str, key: str):
    try:
        with open(path, "r") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb(key: str):
    """Return (MB, how it was read) for VmRSS or VmHWM, falling back to ru_maxrss."""
    kb = proc_kb("/proc/self/status", key)
    if kb is not None:
        return round(kb / 1024.0, 3), "%s from /proc/self/status" % key
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1048576.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB elsewhere
        return round(maxrss / scale, 3), "ru_maxrss from resource.getrusage (peak so far)"
    except (ImportError, OSError):
        return None, "unavailable"


# ---------------------------------------------------------------- runtimes


class Spec:
    """One tensor as the runtime takes it: shape (None: dynamic), numpy dtype, quantization."""

    def __init__(self, name, shape, dtype, scale=None, zero_point=None, key=None):
        self.name = name
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.scale = scale
        self.zero_point = zero_point
        self.key = key  # the runtime's handle: a tensor index or a name


class TFLiteRuntime:
    """TFLite through ai_edge_litert, tflite_runtime or tensorflow.lite, whichever imports first."""

    def __init__(self, args):
        self.threads = args.threads
        self.requested = args.delegates
        self.notes = []
        if args.providers:
            self.notes.append("--providers applies to ONNX Runtime; ignored for a TFLite artifact")
        self.interpreter = None
        self.loaded_delegates = []
        self.name, self.version, self.Interpreter, self.load_delegate = self._import()

    @staticmethod
    def _import():
        reasons = []
        try:
            import ai_edge_litert
            from ai_edge_litert.interpreter import Interpreter, load_delegate

            return "ai_edge_litert", getattr(ai_edge_litert, "__version__", None), Interpreter, load_delegate
        except Exception as exc:
            reasons.append("ai_edge_litert: %s" % exc)
        try:
            import tflite_runtime
            from tflite_runtime.interpreter import Interpreter, load_delegate

            return "tflite_runtime", getattr(tflite_runtime, "__version__", None), Interpreter, load_delegate
        except Exception as exc:
            reasons.append("tflite_runtime: %s" % exc)
        try:
            import tensorflow as tf

            return "tensorflow.lite", tf.__version__, tf.lite.Interpreter, tf.lite.experimental.load_delegate
        except Exception as exc:
            reasons.append("tensorflow: %s" % exc)
        raise AgentFailure("no TFLite runtime importable (" + "; ".join(reasons) + ")")

    def _delegates(self):
        """Load the requested external delegates; a missing one is a note, not a failure."""
        loaded, names = [], []
        for name in self.requested:
            if name.lower() == "xnnpack":
                continue  # built into the interpreter, applied by default
            candidates = DELEGATE_LIBRARIES.get(name.lower())
            if candidates is None and ("/" in name or ".so" in name or name.endswith(".dylib")):
                candidates = [name]
            if candidates is None:
                self._note("%s delegate not available: unknown delegate name; ran on CPU" % name)
                continue
            reason = None
            for library in candidates:
                try:
                    loaded.append(self.load_delegate(library))
                    names.append(name)
                    reason = None
                    break
                except Exception as exc:
                    reason = reason or first_line(exc)
            if reason is not None:
                self._note("%s delegate not available: %s; ran on CPU" % (name, reason))
        return loaded, names

    def _note(self, text):
        if text not in self.notes:
            self.notes.append(text)

    def load(self, model_path: str) -> None:
        """Read the file, build the interpreter on it, allocate tensors (XNNPACK packs the weights here); keep each phase's ms."""
        t0 = time.perf_counter_ns()
        delegates, self.loaded_delegates = self._delegates()
        t1 = time.perf_counter_ns()
        with open(model_path, "rb") as f:
            content = f.read()
        t2 = time.perf_counter_ns()
        kwargs = {"model_content": content}
        if self.threads is not None:
            kwargs["num_threads"] = self.threads
        if delegates:
            kwargs["experimental_delegates"] = delegates
        self.interpreter = self.Interpreter(**kwargs)
        t3 = time.perf_counter_ns()
        self.interpreter.allocate_tensors()
        t4 = time.perf_counter_ns()
        self.phases = {"read_file": (t2 - t1) / 1e6, "build_interpreter": (t3 - t2) / 1e6, "allocate_tensors": (t4 - t3) / 1e6}
        if self.requested and [d for d in self.requested if d.lower() != "xnnpack"]:
            self.phases["load_delegates"] = (t1 - t0) / 1e6

    def end_phases(self) -> dict:
        return dict(getattr(self, "phases", {}))

    def delegates_used(self) -> list:
        if self.interpreter is None:
            return []
        used = list(self.loaded_delegates)
        try:
            ops = [op.get("op_name") for op in self.interpreter._get_ops_details()]
            delegated = "DELEGATE" in ops
        except Exception:
            delegated = None
        if not self.loaded_delegates:
            if delegated:
                used.append("xnnpack")
                self._note(
                    "xnnpack: built into %s and applied by default at allocate_tensors (not loaded separately)" % self.name
                )
            elif delegated is None:
                used.append("xnnpack")
                self._note("xnnpack: assumed applied by default; this runtime does not show its execution plan")
            elif "xnnpack" in [d.lower() for d in self.requested]:
                self._note("xnnpack was requested but the interpreter delegated no node to it; ran on the built-in kernels")
        return used

    def _spec(self, d):
        scale, zero_point = d.get("quantization", (0.0, 0))
        shape = [int(v) for v in d["shape"]]
        return Spec(d["name"], shape, d["dtype"], float(scale) if scale else None, int(zero_point) if scale else None, d["index"])

    def inputs(self) -> list:
        return [self._spec(d) for d in self.interpreter.get_input_details()]

    def outputs(self) -> list:
        return [self._spec(d) for d in self.interpreter.get_output_details()]

    def bind(self, specs, arrays):
        return list(zip([s.key for s in specs], arrays))

    def infer(self, bound, out_specs) -> list:
        it = self.interpreter
        for index, array in bound:
            it.set_tensor(index, array)
        it.invoke()
        return [it.get_tensor(s.key) for s in out_specs]

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "delegates": self.delegates_used(), "providers": [], "threads": self.threads,
                "nodes_by_provider": None}


class OrtRuntime:
    """ONNX Runtime with the requested execution providers that this build has."""

    def __init__(self, args, manifest):
        self.threads = args.threads
        self.notes = []
        self.session = None
        if args.delegates:
            self.notes.append("--delegates applies to TFLite; ignored for an ONNX artifact")
        try:
            import onnxruntime
        except Exception as exc:
            raise AgentFailure("onnxruntime is not importable: %s" % exc)
        self.ort = onnxruntime
        self.name, self.version = "onnxruntime", getattr(onnxruntime, "__version__", None)
        self.quant = {}
        for spec in list(manifest.get("inputs") or []) + list(manifest.get("outputs") or []):
            if isinstance(spec, dict) and spec.get("scale"):
                self.quant[spec.get("name")] = (float(spec["scale"]), int(spec.get("zero_point") or 0))
        self.precision = manifest.get("precision")
        self.cache_dir = args.cache_dir
        requested = args.providers or ["CPUExecutionProvider"]
        available = onnxruntime.get_available_providers()
        self.providers = [p for p in requested if p in available]
        missing = [p for p in requested if p not in available]
        if missing:
            fallback = self.providers[0] if self.providers else "CPUExecutionProvider"
            self.notes.append(
                "provider %s not available here (available: %s); ran on %s"
                % (", ".join(missing), ", ".join(available), fallback)
            )
        if not self.providers:
            self.providers = ["CPUExecutionProvider"]

    def _options(self):
        options = self.ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        return options

    def _provider_args(self) -> list:
        """The providers with their options: TensorRT gets its engine cache and precision flags."""
        result = []
        for name in self.providers:
            if name == "TensorrtExecutionProvider":
                options = {"trt_fp16_enable": "True" if self.precision in ("fp16", "int8") else "False"}
                if self.precision == "int8":
                    options["trt_int8_enable"] = "True"  # lets TensorRT run the QDQ (explicitly quantized) graph in int8
                if self.cache_dir:
                    options.update(trt_engine_cache_enable="True", trt_engine_cache_path=self.cache_dir, trt_timing_cache_enable="True",
                                   trt_timing_cache_path=self.cache_dir)
                result.append((name, options))
            else:
                result.append(name)
        return result

    def _session(self, model_path: str, options):
        if self.cache_dir and "TensorrtExecutionProvider" in self.providers:
            try:
                os.makedirs(self.cache_dir, exist_ok=True)
            except OSError:
                self.cache_dir = None
        try:
            return self.ort.InferenceSession(model_path, sess_options=options, providers=self._provider_args())
        except Exception as exc:
            if self.providers == ["CPUExecutionProvider"]:
                raise
            if "TensorrtExecutionProvider" in self.providers:
                try:  # an older onnxruntime may not know one of the TensorRT options: try without them
                    session = self.ort.InferenceSession(model_path, sess_options=options, providers=self.providers)
                    self._note("TensorRT provider options refused (%s); ran without engine cache or precision flags" % first_line(exc))
                    return session
                except Exception:
                    pass
            # A provider that is built in but cannot start here (no GPU, CUDA libraries missing):
            # fall back to the CPU with a note. A model the CPU also rejects raises its own reason.
            session = self.ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
            self._note("providers %s could not create a session (%s); fell back to CPUExecutionProvider"
                       % (", ".join(p for p in self.providers if p != "CPUExecutionProvider"), first_line(exc)))
            self.providers = ["CPUExecutionProvider"]
            return session

    def _note(self, text):
        if text not in self.notes:
            self.notes.append(text)

    def load(self, model_path: str, optimise: bool = True, ort_format: bool = False, profile_dir=None) -> None:
        """Create the session; OPTIMISE False for a graph optimised when its form was made; PROFILE_DIR: split
        session creation into phases with ONNX Runtime's profiler (its file is written there and removed)."""
        options = self._options()
        if not optimise:
            options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if ort_format:
            options.add_session_config_entry("session.load_model_format", "ORT")
        if profile_dir:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(profile_dir, ".edgepack-ort-profile-%d" % os.getpid())
        t0 = time.perf_counter_ns()
        self.session = self._session(model_path, options)
        self.phases = {"create_session": (time.perf_counter_ns() - t0) / 1e6}
        self.profiling = bool(profile_dir)

    def end_phases(self) -> dict:
        """The load's phases: session creation split by ONNX Runtime's profiler where it ran."""
        phases = dict(getattr(self, "phases", {}))
        if not getattr(self, "profiling", False):
            return phases
        self.profiling = False
        path = self.session.end_profiling()
        try:
            with open(path, "r", encoding="utf-8") as f:
                events = json.load(f)
        finally:
            if path and os.path.isfile(path):
                os.remove(path)
        total = phases.pop("create_session")
        split = {}
        for event in events if isinstance(events, list) else []:
            name = str(event.get("name", ""))
            if event.get("cat") == "Session" and (name.startswith("model_loading") or name == "session_initialization"):
                key = "model_loading" if name.startswith("model_loading") else name
                split[key] = split.get(key, 0.0) + float(event.get("dur") or 0) / 1000.0
        phases.update(split)
        phases["session_other"] = max(total - sum(split.values()), 0.0)
        return phases

    def make_form(self, model_path: str, form: str, out_dir: str) -> str:
        """Optimise the graph once here and save it as FORM in OUT_DIR; return the file to load."""
        options = self._options()
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # its warning that the result suits this machine only is the point
        name = FORM_FILES[form]
        options.optimized_model_filepath = os.path.join(out_dir, name)
        if form == "onnx-optimized":
            # Weights in a file of their own, which ONNX Runtime maps instead of parsing them out of the protobuf.
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", name + ".data")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        else:
            options.add_session_config_entry("session.save_model_format", "ORT")
        self.ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
        if not os.path.isfile(os.path.join(out_dir, name)):
            raise AgentFailure("onnxruntime %s wrote no %s" % (self.version, name))
        return name

    def placement(self, model_path: str, bound, out_specs):
        """Run once in a profiling session; return {provider: {kernel: count}} as ONNX Runtime's profiler reports it."""
        options = self._options()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(os.path.dirname(os.path.dirname(model_path)), ".edgepack-ort-profile-%d" % os.getpid())
        session = self._session(model_path, options)
        path = None
        try:
            session.run([s.key for s in out_specs], bound)
            path = session.end_profiling()
            with open(path, "r", encoding="utf-8") as f:
                events = json.load(f)
        finally:
            if path and os.path.isfile(path):
                os.remove(path)
        placed = {}
        for event in events if isinstance(events, list) else []:
            fields = event.get("args") or {}
            if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time") and fields.get("provider"):
                kernels = placed.setdefault(fields["provider"], {})
                kernels[fields.get("op_name") or "?"] = kernels.get(fields.get("op_name") or "?", 0) + 1
        return placed

    def _spec(self, node):
        shape = [d if isinstance(d, int) and d >= 0 else None for d in node.shape]
        dtype = ORT_DTYPES.get(node.type)
        if dtype is None:
            raise AgentFailure("tensor %s has type %s, which the agent cannot feed" % (node.name, node.type))
        scale, zero_point = self.quant.get(node.name, (None, None))
        return Spec(node.name, shape, dtype, scale, zero_point, node.name)

    def inputs(self) -> list:
        return [self._spec(n) for n in self.session.get_inputs()]

    def outputs(self) -> list:
        return [self._spec(n) for n in self.session.get_outputs()]

    def bind(self, specs, arrays):
        return dict(zip([s.key for s in specs], arrays))

    def infer(self, bound, out_specs) -> list:
        return self.session.run([s.key for s in out_specs], bound)

    def info(self) -> dict:
        if self.session is None:
            return {"name": self.name, "version": self.version, "delegates": [], "providers": [], "threads": self.threads,
                    "nodes_by_provider": None}
        used = list(self.session.get_providers())
        dropped = [p for p in self.providers if p not in used]
        if dropped:
            self._note("provider %s is available but the session did not use it; ran on %s" % (", ".join(dropped), ", ".join(used)))
        return {"name": self.name, "version": self.version, "delegates": [], "providers": used, "threads": self.threads,
                "nodes_by_provider": getattr(self, "nodes_by_provider", None)}


class LiteRtCompiled:
    """LiteRT's CompiledModel with the XNNPACK weight cache: the TFLite load-optimised form.

    The weight cache holds XNNPACK's packed weights, so a load maps them instead of repacking
    every weight; only ai_edge_litert's CompiledModel API takes it (CpuOptions.xnnpack_weight_cache_path).
    """

    def __init__(self, base: TFLiteRuntime, manifest: dict):
        t0 = time.perf_counter_ns()
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.options import CpuOptions, Options

        self.import_ms = (time.perf_counter_ns() - t0) / 1e6
        self.CompiledModel, self.CpuOptions, self.Options = CompiledModel, CpuOptions, Options
        self.name, self.version, self.threads, self.notes = base.name, base.version, base.threads, base.notes
        self.manifest_inputs = list(manifest.get("inputs") or [])
        self.manifest_outputs = list(manifest.get("outputs") or [])
        self.model = None

    @staticmethod
    def unavailable(base: TFLiteRuntime):
        """Why this device's TFLite runtime cannot make the form, or None."""
        if base.name != "ai_edge_litert":
            return "%s %s has no XNNPACK weight cache (ai_edge_litert's CompiledModel has)" % (base.name, base.version)
        external = [d for d in base.requested if d.lower() != "xnnpack"]
        if external:
            return "the XNNPACK weight cache does not apply with the %s delegate" % ", ".join(external)
        try:
            import dataclasses

            from ai_edge_litert.options import CpuOptions

            if "xnnpack_weight_cache_path" not in [f.name for f in dataclasses.fields(CpuOptions)]:
                return "ai_edge_litert %s: CpuOptions has no xnnpack_weight_cache_path" % base.version
        except Exception as exc:
            return "ai_edge_litert %s has no CompiledModel API with CPU options (%s)" % (base.version, first_line(exc))
        return None

    def load(self, model_path: str, cache_file: str) -> None:
        t0 = time.perf_counter_ns()
        options = self.Options(cpu_options=self.CpuOptions(num_threads=self.threads or 0, xnnpack_weight_cache_path=cache_file))
        self.model = self.CompiledModel.from_file(model_path, options=options)
        t1 = time.perf_counter_ns()
        signatures = self.model.get_signature_list()
        if not signatures:
            raise AgentFailure("the model has no signature: LiteRT's CompiledModel cannot run it")
        self.key = next(iter(signatures))
        self.index = self.model.get_signature_index(self.key)
        self.in_names, self.out_names = list(signatures[self.key]["inputs"]), list(signatures[self.key]["outputs"])
        self.in_buffers = self.model.create_input_buffers(self.index)
        self.out_buffers = self.model.create_output_buffers(self.index)
        t2 = time.perf_counter_ns()
        self.phases = {"create_compiled_model": (t1 - t0) / 1e6, "create_buffers": (t2 - t1) / 1e6}

    def end_phases(self) -> dict:
        return dict(getattr(self, "phases", {}))

    def _specs(self, names, details, manifest_specs) -> list:
        by_name = dict((m.get("name"), m) for m in manifest_specs if isinstance(m, dict))
        specs = []
        for k, name in enumerate(names):
            m = by_name.get(name) or (manifest_specs[k] if k < len(manifest_specs) and isinstance(manifest_specs[k], dict) else {})
            d = details[name]
            specs.append(Spec(name, [int(v) for v in d["shape"]], d["dtype"], m.get("scale"), m.get("zero_point") if m.get("scale") else None, k))
        return specs

    def inputs(self) -> list:
        return self._specs(self.in_names, self.model.get_input_tensor_details(self.key), self.manifest_inputs)

    def outputs(self) -> list:
        return self._specs(self.out_names, self.model.get_output_tensor_details(self.key), self.manifest_outputs)

    def bind(self, specs, arrays):
        return list(zip([s.key for s in specs], arrays))

    def infer(self, bound, out_specs) -> list:
        for k, array in bound:
            self.in_buffers[k].write(np.ascontiguousarray(array))
        self.model.run_by_index(self.index, self.in_buffers, self.out_buffers)
        return [self.out_buffers[s.key].read(int(np.prod(s.shape)), s.dtype).reshape(s.shape) for s in out_specs]

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "delegates": ["xnnpack"], "providers": [], "threads": self.threads,
                "nodes_by_provider": None}


def make_runtime(engine: str, args, manifest):
    if engine == "tflite":
        return TFLiteRuntime(args)
    if engine == "tensorrt":  # trtexec is not on this device: ONNX Runtime, TensorRT provider first
        args.providers = args.providers or list(GPU_PROVIDERS)
    return OrtRuntime(args, manifest)


# ---------------------------------------------------------------- loading


def evict_page_cache(path: str):
    """Drop the file's pages from the page cache; return (evicted, note)."""
    if not hasattr(os, "posix_fadvise"):
        return False, "posix_fadvise is not available on this OS; cold loads read a warm page cache"
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            os.fsync(fd)  # dirty pages cannot be dropped
        except OSError:
            pass
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            return False, "posix_fadvise(POSIX_FADV_DONTNEED) failed: %s" % exc
        resident = resident_pages(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    if resident is None:
        return True, None
    if resident[0]:
        return False, (
            "%d of %d model pages stayed in the page cache after POSIX_FADV_DONTNEED "
            "(file mapped by another process, or on tmpfs)" % resident
        )
    return True, None


def resident_pages(fd: int, size: int):
    """Return (resident, total) pages of the file via mmap + mincore, or None where unsupported."""
    if size <= 0 or not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import ctypes.util
        import mmap

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            return None
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, vec) != 0:
                return None
            return sum(1 for v in vec if v & 1), pages
        finally:
            libc.munmap(addr, size)
    except Exception:
        return None


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


# ---------------------------------------------------------------- load cache


def entry_name(model_sha256: str, runtime: str, version) -> str:
    """Name of a model's load-cache entry (as edgepack_runtime.entry_name): its sha256, the runtime's name and version."""
    return "%s-%s-%s" % (model_sha256[:32], safe_name(runtime), safe_name(version or "unknown"))


def safe_name(text) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", str(text))


def possible_forms(engine: str, runtime, notes: list) -> list:
    """The load-optimised forms this device's runtime can make for this engine (a note says why where none)."""
    if engine == "tflite":
        why = LiteRtCompiled.unavailable(runtime)
        if why:
            notes.append("no load-optimised TFLite form: " + why)
            return []
        return list(TFLITE_FORMS)
    if runtime.providers != ["CPUExecutionProvider"]:
        notes.append(
            "load-optimised ONNX graphs are made for CPUExecutionProvider only; with %s the TensorRT engine and timing "
            "caches (--cache-dir) are what spare a load its build" % ", ".join(runtime.providers)
        )
        return []
    return list(ONNX_FORMS)


def write_meta(entry: str, meta: dict) -> None:
    """Write ENTRY's meta.json whole or not at all."""
    part = os.path.join(entry, META + ".part%d" % os.getpid())
    with open(part, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    os.replace(part, os.path.join(entry, META))


def file_entries(entry: str, names: list) -> list:
    out = []
    for name in names:
        path = os.path.join(entry, name)
        st = os.stat(path)
        out.append({"path": name, "bytes": st.st_size, "sha256": sha256_file(path), "mtime_ns": st.st_mtime_ns})
    return out


def checked_entry(entry: str, sha: str, runtime, forms: list):
    """Return (meta, None) for an entry whose every file matches its sha256, else (None, why it cannot be used).

    Where a file's content matches but its size or time stamp moved (the entry was copied), they are
    recorded again, so that edgepack_runtime.py (which checks only those) uses it.
    """
    path = os.path.join(entry, META)
    if not os.path.isdir(entry):
        return None, None
    try:
        with open(path, "r", encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        return None, "has an unreadable meta.json (%s)" % first_line(exc)
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return None, "is not load-cache format %d" % CACHE_FORMAT
    rt = meta.get("runtime") or {}
    if meta.get("model_sha256") != sha or rt.get("name") != runtime.name or rt.get("version") != runtime.version:
        return None, "is stale (made for another model or runtime version)"
    if meta.get("form") not in forms or not isinstance(meta.get("files"), list) or not meta["files"]:
        return None, "holds a form this runtime does not make (%r)" % meta.get("form")
    moved = False
    for f in meta["files"]:
        name = f.get("path") if isinstance(f, dict) else None
        fpath = os.path.join(entry, name) if isinstance(name, str) and os.path.basename(name) == name else None
        if fpath is None or not os.path.isfile(fpath):
            return None, "is missing %s" % name
        st = os.stat(fpath)
        if st.st_size != f.get("bytes") or sha256_file(fpath) != f.get("sha256"):
            return None, "is corrupt (%s does not match its sha256)" % name
        if st.st_mtime_ns != f.get("mtime_ns"):
            f["mtime_ns"], moved = st.st_mtime_ns, True
    if moved:
        write_meta(entry, meta)
    return meta, None


def writable_dir(path: str):
    """Make PATH if need be and show that a file can be written there; return None, or why not."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edgepack-write-", dir=path)
        os.close(fd)
        os.remove(probe)
        return None
    except OSError as exc:
        return exc.strerror or str(exc)


def sweep_staging(cache_dir: str) -> None:
    """Remove staging directories that agents killed mid-way left in CACHE_DIR."""
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        try:
            if name.startswith(".") and ".part" in name and time.time() - os.lstat(path).st_mtime > STAGING_STALE_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def make_entry(args, cache_dir: str, entry: str, sha: str, runtime, forms: list, notes: list):
    """Make the load-optimised form in a staging directory beside ENTRY, keep the fastest-loading one, and move it
    into place. Return its meta (``use`` false until the measurement says otherwise), or None where none could be made."""
    sweep_staging(cache_dir)
    staging = os.path.join(cache_dir, ".%s.part%d" % (os.path.basename(entry), os.getpid()))
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        made = []
        for form in forms:
            result = run_probe(probe_command(args, "--make-form", "--form", form, "--form-dir", staging))
            if result.get("ok"):
                made.append(form)
            else:
                notes.append("could not make the %s form: %s" % (form, result.get("error")))
        tried = {}
        if len(made) > 1:  # keep the one that loads fastest here
            for form in made:
                results, _, _, error = probe_loads(args, max(args.cold_loads, 1), False, "--form", form, "--form-dir", staging)
                tried[form] = median_of(results, "load_ms") if error is None else None
                if error is not None:
                    notes.append("the %s form does not load: %s" % (form, error))
            made = sorted([f for f in made if tried.get(f) is not None], key=lambda f: tried[f])
        if not made:
            return None
        form = made[0]
        names = [n for n in sorted(os.listdir(staging)) if n.startswith(FORM_FILES[form])]
        for name in os.listdir(staging):
            if name not in names:
                os.remove(os.path.join(staging, name))
        meta = {
            "format": CACHE_FORMAT,
            "model_sha256": sha,
            "runtime": {"name": runtime.name, "version": runtime.version},
            "form": form,
            "model": FORM_FILES[form],
            "files": file_entries(staging, names),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tried_warm_ms": tried,
            "use": False,
            "why": "not measured yet",
        }
        write_meta(staging, meta)
        if os.path.isdir(entry):
            shutil.rmtree(entry)
        os.rename(staging, entry)
        return meta
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_load_cache(args, engine: str, runtime, sha: str, notes: list):
    """Find this model's load-cache entry, checked file by file, or make it; return (entry, meta, created) or None."""
    forms = possible_forms(engine, runtime, notes)
    if not forms:
        return None
    cache_dir = args.load_cache_dir
    why = writable_dir(cache_dir)
    if why is not None:
        notes.append("load cache %s is not writable (%s): measured the plain load only" % (cache_dir, why))
        return None
    entry = os.path.join(cache_dir, entry_name(sha, runtime.name, runtime.version))
    meta, why = checked_entry(entry, sha, runtime, forms)
    if meta is not None:
        return entry, meta, False
    if why is not None:
        notes.append("load cache entry %s %s: made again, not used" % (entry, why))
        shutil.rmtree(entry, ignore_errors=True)
    prefix = sha[:32] + "-"
    for name in os.listdir(cache_dir):  # the same model's entries for another runtime version are stale now
        if name.startswith(prefix) and name != os.path.basename(entry):
            shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)
            notes.append("removed the load cache entry %s: made for another %s version" % (name, runtime.name))
    try:
        meta = make_entry(args, cache_dir, entry, sha, runtime, forms, notes)
    except OSError as exc:
        notes.append("load cache %s could not be written (%s): measured the plain load only" % (cache_dir, exc.strerror or exc))
        return None
    return (entry, meta, True) if meta is not None else None


def measure_optimized(args, entry: str, meta: dict, created: bool, notes: list):
    """Time cold and warm loads of the entry's form (fresh processes), with its phases and a check of its answers."""
    form = meta["form"]
    extra = ["--form", form, "--form-dir", entry]
    cold, cold_evicted, cold_notes, error = probe_loads(args, args.cold_loads, True, *extra)
    warm, warm_error = [], error
    if error is None:
        warm, _, _, warm_error = probe_loads(args, max(args.cold_loads, 1), False, "--phases", *extra)
    checked = run_probe(probe_command(args, "--check", *extra)) if warm_error is None else {"ok": False, "error": warm_error}
    for note in cold_notes:
        if note not in notes:
            notes.append(note)
    if warm_error is not None or not checked.get("ok"):
        notes.append("the %s form in %s failed: %s; not used" % (form, entry, warm_error or checked.get("error")))
        meta["use"], meta["why"] = False, "it failed on the device: %s" % (warm_error or checked.get("error"))
        meta["answers_ok"] = False
        write_meta(entry, meta)
        return None
    # Checked against the reference on this device: the loader may load it when asked by name
    # (the time to first answer does); whether it is as good as plain, and faster, is decided after.
    meta["answers_ok"] = True
    write_meta(entry, meta)
    tried = dict((k, v) for k, v in (meta.get("tried_warm_ms") or {}).items() if k != form and v is not None)
    return {
        "form": form,
        "cold_ms": [r["load_ms"] for r in cold],
        "warm_ms": [r["load_ms"] for r in warm],
        "cold_evicted": cold_evicted if args.cold_loads else None,
        "phases_ms": median_phases(warm),
        "import_ms": median_of(warm, "import_ms"),
        "check": checked.get("check"),
        "path": entry,
        "created": created,
        "alternatives_warm_ms": tried or None,
        "used_by_loader": False,
        "method": FORM_METHODS[form],
    }


FORM_METHODS = {
    "onnx-optimized": "InferenceSession creation from the graph ONNX Runtime optimised once on this device (ORT_ENABLE_ALL, "
    "saved with optimized_model_filepath, weights in an external file it maps), loaded with graph optimisation disabled",
    "ort-format": "InferenceSession creation from the graph ONNX Runtime optimised once on this device, saved in ORT format "
    "(session.load_model_format=ORT), loaded with graph optimisation disabled",
    "xnnpack-weight-cache": "LiteRT CompiledModel.from_file with CpuOptions(xnnpack_weight_cache_path=...) on the weights "
    "XNNPACK packed once on this device, plus its input and output buffers",
}


def decide_use(load: dict, plain_check) -> tuple:
    """Whether the loader should use the optimised form: its answers as good as the plain load's, and it is faster.

    Faster means less time from import to first answer: the runtime's import (an API with a slow
    import loses what its load saves), the load and the first inference (a mapped form moves work
    there), each the median over the warm loads. The end-to-end first-answer figures hold a few
    hundred ms of Python start-up that both forms share, whose noise would decide a close call.
    """
    optimized = load["optimized"]
    check = optimized.get("check")
    if check is None:
        return False, "its answers were not checked (no reference.npz)"
    if plain_check is not None:
        tolerance = 1e-5 + 0.05 * (plain_check.get("max_abs_error") or 0.0)
        if (check.get("max_abs_error") or 0.0) > (plain_check.get("max_abs_error") or 0.0) + tolerance:
            return False, "its answers differ more from the reference (max |err| %.3g) than the plain load's (%.3g)" % (
                check.get("max_abs_error"), plain_check.get("max_abs_error"))
        if (check.get("top1_agreement") or 0.0) < (plain_check.get("top1_agreement") or 0.0):
            return False, "its top-1 agreement with the reference is lower than the plain load's"

    def cost(figures):
        if figures.get("import_ms") is None or not figures.get("warm_ms"):
            return None
        return figures["import_ms"] + float(np.median(figures["warm_ms"])) + (figures.get("phases_ms") or {}).get("first_inference", 0.0)

    a, b = cost(load), cost(optimized)
    if a is None or b is None:
        return False, "no warm loads of both forms to compare; " + ANSWERS_OK
    return b < a, "runtime import + load + first inference %.1f ms against %.1f ms plain (medians over the warm loads); %s" % (b, a, ANSWERS_OK)


ANSWERS_OK = "its answers are as good as the plain load's"  # in `why`: the form may be asked for by name (load(form=...))


# ---------------------------------------------------------------- time to first answer


FIRST_ANSWER_SCRIPT = r"""
import sys, time
t0 = time.perf_counter_ns()
sys.path.insert(0, sys.argv[1])
import json
import edgepack_runtime
model = edgepack_runtime.load(sys.argv[2], background=sys.argv[4] == "1", form=sys.argv[3], cache_dir=sys.argv[5] or None,
                              threads=int(sys.argv[6]) if sys.argv[6] else None)
time.sleep(float(sys.argv[7]) / 1000.0)  # the app's other start-up work
import numpy as np
inputs = [np.zeros([d if d is not None else 1 for d in spec.get("shape") or []], dtype="float32") for spec in model.inputs]
model.predict(*inputs)
ms = (time.perf_counter_ns() - t0) / 1e6
print("%s%s" % (sys.argv[8], json.dumps({"ms": ms, "form": model.form, "load_ms": model.load_ms})))
"""


def find_loader(bundle: str):
    """The loader an app would import: the bundle's own, else the one pushed beside this agent."""
    for folder in (bundle, os.path.dirname(os.path.abspath(__file__))):
        if os.path.isfile(os.path.join(folder, LOADER)):
            return folder
    return None


def first_answers(args, optimized, notes: list):
    """Time import-to-first-answer with the loader in fresh processes: plain and optimised, foreground and background."""
    folder = find_loader(args.bundle)
    if folder is None:
        notes.append("no %s in the bundle or beside the agent: time to first answer not measured" % LOADER)
        return None
    variants = [("plain", "plain", False), ("plain", "plain", True)]
    if optimized is not None:
        variants += [(optimized["form"], "optimized", False), (optimized["form"], "optimized", True)]
    runs = []
    for name, form, background in variants:
        samples = []
        for _ in range(max(args.cold_loads, 1)):
            # -B: importing the loader leaves no __pycache__ in the bundle.
            cmd = [sys.executable, "-B", "-c", FIRST_ANSWER_SCRIPT, folder, os.path.abspath(args.bundle), form, "1" if background else "0",
                   args.load_cache_dir or "", str(args.threads or ""), "%g" % STARTUP_WORK_MS, FIRST_ANSWER_MARK]
            try:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=PROBE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                notes.append("time to first answer (%s): took longer than %d s" % (name, PROBE_TIMEOUT_S))
                return None
            found = [l for l in proc.stdout.decode("utf-8", "replace").splitlines() if l.startswith(FIRST_ANSWER_MARK)]
            if proc.returncode != 0 or not found:
                tail = [l for l in proc.stderr.decode("utf-8", "replace").splitlines() if l.strip()]
                notes.append("time to first answer (%s) not measured: the loader failed: %s" % (name, tail[-1] if tail else "exit %d" % proc.returncode))
                return None
            result = json.loads(found[-1][len(FIRST_ANSWER_MARK):])
            if result.get("form") != name:
                notes.append("time to first answer: the loader loaded %s, not %s" % (result.get("form"), name))
                return None
            samples.append(float(result["ms"]))
        runs.append({"form": name, "background": background, "ms": samples})
    return {
        "startup_work_ms": STARTUP_WORK_MS,
        "runs": runs,
        "method": (
            "perf_counter_ns in a fresh process from before `import edgepack_runtime` to the return of the first "
            "predict (runtime import, load, first inference), page cache warm; the app's other start-up work stood in "
            "for by %g ms of waiting, after load() in the foreground or while load(background=True) runs" % STARTUP_WORK_MS
        ),
    }


# ---------------------------------------------------------------- inputs, outputs, check


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


def check_outputs(runtime, in_specs, out_specs, reference, notes) -> dict:
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
        max_err = max(max_err, float(err.max()) if err.size else 0.0)
        abs_sum += float(err.sum())
        count += err.size
        if want.ndim >= 1 and want.shape[-1] > 1:
            agree += int(np.sum(np.argmax(got, axis=-1) == np.argmax(want, axis=-1)))
            rows += int(want.size // want.shape[-1])
    return {
        "n_samples": n,
        "max_abs_error": max_err if count else None,
        "mean_abs_error": abs_sum / count if count else None,
        "top1_agreement": agree / float(rows) if rows else None,
    }


# ---------------------------------------------------------------- timing


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


# ---------------------------------------------------------------- TensorRT (trtexec)


def find_trtexec():
    """Return the path of trtexec, on PATH or where JetPack installs it, or None."""
    found = shutil.which("trtexec")
    if found:
        return found
    for path in TRTEXEC_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def trt_version(code: int) -> str:
    """Turn trtexec's banner code into a version: 8601 -> 8.6.1, 100300 -> 10.3.0."""
    if code >= 10000:
        return "%d.%d.%d" % (code // 10000, (code // 100) % 100, code % 100)
    return "%d.%d.%d" % (code // 1000, (code // 100) % 10, code % 100)


_TRT_STATS = {
    "Latency": "latency_ms",
    "Enqueue Time": "enqueue_ms",
    "H2D Latency": "h2d_ms",
    "GPU Compute Time": "gpu_compute_ms",
    "D2H Latency": "d2h_ms",
}
_TRT_LINE = re.compile(r"^(?:\[[^\]]*\]\s*)*?\[([IWEVF])\]\s?(.*)$")


def _trt_stats(text: str) -> dict:
    """Parse "min = 0.07 ms, max = 0.41 ms, mean = ..., median = ..., percentile(90%) = ... ms, ..."."""
    result = {"min": None, "max": None, "mean": None, "median": None, "percentiles": {}}
    for key, value in re.findall(r"(min|max|mean|median|percentile\(\d+(?:\.\d+)?%\))\s*=\s*([-\d.eE+]+)\s*ms", text):
        if key.startswith("percentile"):
            result["percentiles"][key[len("percentile("):-2]] = float(value)
        else:
            result[key] = float(value)
    for pct, value in re.findall(r"percentile:\s*(\d+(?:\.\d+)?)%\s*=\s*([-\d.eE+]+)\s*ms", text):  # TensorRT < 8.4
        result["percentiles"][pct] = float(value)
    return result


def parse_trtexec(text: str) -> dict:
    """Turn trtexec's output into figures: version, engine build and load times, throughput, and
    the performance summary's statistics (ms), each as trtexec itself computed them.

    A pure function of the text, so that it can be tested against real trtexec output.
    """
    figures = {
        "tensorrt_version": None, "device": None, "precision": None, "passed": None,
        "engine_build_s": None, "engine_load_ms": None, "throughput_qps": None,
        "latency_ms": None, "enqueue_ms": None, "h2d_ms": None, "gpu_compute_ms": None, "d2h_ms": None,
        "warmup_queries": None, "queries": None, "trace_s": None, "host_walltime_s": None, "gpu_compute_total_s": None,
        "warnings": [], "errors": [],
    }
    in_summary = False
    for raw in text.splitlines():
        line = raw.strip()
        banner = re.match(r"&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec \[TensorRT v(\d+)\]", line)
        if banner:
            figures["tensorrt_version"] = figures["tensorrt_version"] or trt_version(int(banner.group(2)))
            if banner.group(1) != "RUNNING":
                figures["passed"] = banner.group(1) == "PASSED"
            continue
        m = _TRT_LINE.match(line)
        if not m:
            continue
        level, body = m.group(1), m.group(2).strip()
        if level in ("E", "F"):
            body = re.sub(r"^\[TRT\]\s*", "", body)
            if body and body not in figures["errors"]:
                figures["errors"].append(body)
            continue
        if level == "W":
            if in_summary and body.lstrip("* ").strip():
                figures["warnings"].append(body.lstrip("* ").strip())
            continue
        if body == "=== Performance summary ===":
            in_summary = True
            continue
        if body.startswith("=== "):
            in_summary = False
        found = re.match(r"TensorRT version:\s*(\d+(?:\.\d+)+)", body)
        if found:
            figures["tensorrt_version"] = found.group(1)
            continue
        found = re.match(r"Selected Device:\s*(.+)", body)
        if found and figures["device"] is None:
            figures["device"] = found.group(1).strip()
            continue
        found = re.match(r"Precision:\s*(\S+)", body)
        if found and figures["precision"] is None:
            figures["precision"] = found.group(1)
            continue
        found = re.match(r"Engine built in ([\d.eE+-]+) sec", body)
        if found:
            figures["engine_build_s"] = float(found.group(1))
            continue
        found = re.match(r"Engine deserialized in ([\d.eE+-]+) sec", body)
        if found:
            figures["engine_load_ms"] = float(found.group(1)) * 1000.0
            continue
        found = re.match(r"Warmup completed (\d+) queries over", body)
        if found:
            figures["warmup_queries"] = int(found.group(1))
            continue
        found = re.match(r"Timing trace has (\d+) queries over ([\d.eE+-]+) s", body)
        if found:
            figures["queries"], figures["trace_s"] = int(found.group(1)), float(found.group(2))
            continue
        found = re.match(r"Throughput:\s*([\d.eE+-]+) qps", body)
        if found:
            figures["throughput_qps"] = float(found.group(1))
            continue
        found = re.match(r"Total Host Walltime:\s*([\d.eE+-]+) s", body)
        if found:
            figures["host_walltime_s"] = float(found.group(1))
            continue
        found = re.match(r"Total GPU Compute Time:\s*([\d.eE+-]+) s", body)
        if found:
            figures["gpu_compute_total_s"] = float(found.group(1))
            continue
        name, sep, rest = body.partition(":")
        if sep and name in _TRT_STATS and "=" in rest:
            figures[_TRT_STATS[name]] = _trt_stats(rest)
    return figures


def run_trtexec(cmd: list, timeout: float):
    """Run trtexec; return (exit status, stdout and stderr together)."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AgentFailure("trtexec took longer than %d s: %s" % (timeout, " ".join(cmd[:2])))
    except OSError as exc:
        raise AgentFailure("cannot run trtexec: %s" % exc)
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def trt_name(name: str) -> str:
    """A tensor name as trtexec's --shapes / --loadInputs take it: quoted where it holds a colon."""
    return "'%s'" % name if ":" in name or "," in name else name


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TrtexecRunner:
    """Run a built engine once per call through trtexec (--loadInputs / --exportOutput): the
    reference check, without TensorRT's Python bindings."""

    def __init__(self, trtexec, engine_path, shape_args, workdir):
        self.cmd = [trtexec, "--loadEngine=" + engine_path, "--iterations=1", "--duration=0", "--warmUp=0"] + shape_args
        self.workdir = workdir
        self.calls = 0

    def bind(self, specs, arrays):
        return list(zip(specs, arrays))

    def infer(self, bound, out_specs) -> list:
        self.calls += 1
        loads = []
        for k, (spec, array) in enumerate(bound):
            path = os.path.join(self.workdir, "check_in_%d_%d.bin" % (self.calls, k))
            np.ascontiguousarray(array, dtype=spec.dtype).tofile(path)
            loads.append("%s:%s" % (trt_name(spec.name), path))
        out_path = os.path.join(self.workdir, "check_out_%d.json" % self.calls)
        status, text = run_trtexec(self.cmd + ["--loadInputs=" + ",".join(loads), "--exportOutput=" + out_path], TRTEXEC_TIMEOUT_S)
        if status != 0 or not os.path.isfile(out_path):
            errors = parse_trtexec(text)["errors"]
            raise AgentFailure("trtexec could not run the reference inputs: %s" % (errors[0] if errors else "exit status %d" % status))
        with open(out_path, "r", encoding="utf-8") as f:
            exported = dict((o.get("name"), o) for o in json.load(f))
        results = []
        for spec in out_specs:
            out = exported.get(spec.name)
            if out is None:
                raise AgentFailure("trtexec exported no output named %s" % spec.name)
            dims = [int(d) for d in str(out.get("dimensions", "")).split("x") if d.strip()]
            values = np.asarray(out["values"], dtype=np.float64).reshape(dims or [-1])
            results.append(values.astype(spec.dtype) if spec.dtype.kind in "iu" else values)  # integers: dequantized by the check
        return results


def measure_trtexec(args, report: dict, manifest: dict, model_path: str, reference, trtexec: str) -> None:
    """Build (or take from the cache) a TensorRT engine with trtexec, time it with trtexec, and
    turn trtexec's own figures into the report."""
    notes = report["notes"]
    precision = manifest.get("precision") or "fp32"
    if precision == "dynamic-int8":
        raise AgentFailure(
            "TensorRT cannot run dynamic-range int8 ONNX models (DynamicQuantizeLinear / MatMulInteger): "
            "build the bundle with precision int8 (QDQ) or fp16"
        )
    # --int8 alone would run the layers the QDQ graph leaves in float in fp32; --fp16 lets them use fp16.
    flags = {"fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}.get(precision, [])
    if args.providers or args.delegates:
        notes.append("--providers / --delegates do not apply to trtexec; ignored")
    _, banner = run_trtexec([trtexec, "--help"], 120)
    version = parse_trtexec(banner)["tensorrt_version"] or "unknown"

    def spec(d):
        return Spec(d.get("name"), list(d.get("shape") or []), d.get("dtype") or "float32", d.get("scale"), d.get("zero_point"), d.get("name"))

    in_specs = [spec(d) for d in manifest.get("inputs") or [] if isinstance(d, dict)]
    out_specs = [spec(d) for d in manifest.get("outputs") or [] if isinstance(d, dict)]
    if not in_specs or not out_specs:
        raise AgentFailure("manifest.json lists no inputs or outputs: trtexec needs their names")
    calls = []
    if reference is not None:
        try:
            calls = reference_calls(reference, in_specs)[0]
        except AgentFailure:
            pass  # the check below reports why
    shapes = []
    for k, s in enumerate(in_specs):
        if any(d is None for d in s.shape):
            dims = list(calls[0][k].shape) if calls else [d if d is not None else 1 for d in s.shape]
            shapes.append("%s:%s" % (trt_name(s.name), "x".join(str(int(d)) for d in dims)))
    shape_args = ["--shapes=" + ",".join(shapes)] if shapes else []

    cache_dir = args.cache_dir
    os.makedirs(cache_dir, exist_ok=True)
    key = [sha256_file(model_path)[:32], "trt" + version, precision]
    if shapes:
        key.append(hashlib.sha256(shape_args[0].encode("utf-8")).hexdigest()[:8])
    engine_path = os.path.join(cache_dir, "-".join(key) + ".engine")
    # The timing cache keeps TensorRT's kernel timings for the model: a rebuild (new flags, shapes) skips timing again.
    timing_path = os.path.join(cache_dir, "-".join(key[:2]) + ".timing")
    cached = os.path.isfile(engine_path)
    build_s = None
    if not cached:
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
        build_s = built["engine_build_s"]
        notes.append("built the TensorRT engine (%s) and cached it as %s" % (" ".join(flags) or "fp32", engine_path))
    else:
        notes.append("TensorRT engine taken from the cache: %s" % engine_path)

    workdir = tempfile.mkdtemp(prefix="edgepack-trt-")
    try:
        load_cmd = [trtexec, "--loadEngine=" + engine_path, "--iterations=1", "--duration=0", "--warmUp=0"] + shape_args
        cold, warm, evicted = [], [], True
        for count, evict in ((args.cold_loads, True), (max(args.cold_loads, 1), False)):
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

        inputs = []
        if calls:
            for k, (s, array) in enumerate(zip(in_specs, calls[0])):
                path = os.path.join(workdir, "in_%d.bin" % k)
                np.ascontiguousarray(quantize(array, s)).tofile(path)
                inputs.append("%s:%s" % (trt_name(s.name), path))
        times_path = os.path.join(workdir, "times.json")
        cmd = [trtexec, "--loadEngine=" + engine_path, "--iterations=%d" % max(args.runs, 1),
               "--duration=%g" % args.min_seconds, "--warmUp=%d" % (200 if args.warmup else 0),
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
            "as trtexec timed it, after --warmUp=%d ms; no clipping" % (200 if args.warmup else 0)
        )
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
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        except (ImportError, OSError):
            peak = None
        report["memory"] = {
            "baseline_rss_mb": None,
            "peak_rss_mb": round(peak, 3) if peak is not None else None,
            "delta_mb": None,
            "method": "peak RSS of the largest trtexec process (getrusage RUSAGE_CHILDREN)%s; GPU memory not included"
            % ("" if cached else ", which includes the engine build"),
        }
        if reference is not None:
            limited = reference
            batch = len(calls[0][0]) if calls else 1
            total = len(reference["in_0"]) if "in_0" in reference else 0
            if calls and len(calls) > TRT_CHECK_CALLS:
                keep = TRT_CHECK_CALLS * batch
                limited = dict((k, v[:keep]) for k, v in reference.items())
                notes.append("checked %d of %d reference samples through trtexec (one process per batch)" % (keep, total))
            try:
                report["check"] = check_outputs(TrtexecRunner(trtexec, engine_path, shape_args, workdir), in_specs, out_specs, limited, notes)
            except AgentFailure as exc:
                report["errors"].append("reference check failed: %s" % exc)
        figures.pop("errors")
        figures.update(trtexec=trtexec, engine_path=engine_path, engine_cached=cached, flags=flags)
        figures["engine_build_s"] = build_s
        report["tensorrt"] = figures
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- report


def first_line(exc: BaseException) -> str:
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    return lines[0] if lines else type(exc).__name__


def describe(exc: BaseException) -> str:
    if isinstance(exc, AgentFailure):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: %s" % (str(exc) or "MemoryError")
    return "%s: %s" % (type(exc).__name__, first_line(exc))


def empty_report() -> dict:
    return {
        "protocol": PROTOCOL_VERSION,
        "ok": False,
        "errors": [],
        "notes": [],
        "system": None,
        "runtime": None,
        "load": None,
        "first_inference_ms": None,
        "latency_ms": None,
        "throughput_per_s": None,
        "memory": None,
        "check": None,
        "tensorrt": None,
    }


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: /proc/self/clear_refs, value 5); True where that worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except (OSError, IOError):
        return False


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
    prepared = prepare_load_cache(args, engine, runtime, load_cache_sha(manifest, model_path), notes)
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
    first_answer = first_answers(args, load.get("optimized"), notes) if not report["errors"] else None
    load["first_answer"] = first_answer

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
            report["check"] = check_outputs(runtime, in_specs, out_specs, reference, notes)
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
    if hasattr(runtime, "placement"):  # after the memory figures: a second session must not inflate them
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
    report["runtime"] = runtime.info()
    optimized = load.get("optimized")
    if optimized is not None:
        use, why = decide_use(load, report.get("check"))
        optimized["used_by_loader"] = use
        notes.append("the loader (edgepack_runtime.py) %s the %s form: %s" % ("uses" if use else "does not use", optimized["form"], why))
        try:
            meta = checked_entry(optimized["path"], load_cache_sha(manifest, model_path), runtime, [optimized["form"]])[0]
            if meta is not None:
                meta.update(use=use, why=why, answers_ok=ANSWERS_OK in why, check=optimized.get("check"),
                            measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                write_meta(optimized["path"], meta)
            else:  # the entry changed under the bench: the loader will not find it usable
                optimized["used_by_loader"] = False
        except OSError as exc:
            notes.append("could not record the measurement in %s: %s" % (optimized["path"], exc.strerror or exc))


def load_cache_sha(manifest: dict, model_path: str) -> str:
    """The artifact's sha256: as the manifest lists it (the agent has checked the file against it)."""
    found = next((f.get("sha256") for f in manifest.get("files") or [] if isinstance(f, dict) and f.get("path") == manifest["artifact"]), None)
    return found or sha256_file(model_path)


def exit_with_stdin() -> None:
    """End this agent, and every process it started, when stdin closes.

    The host holds stdin open for as long as it waits for the report; when the host is killed (even
    with SIGKILL) or its SSH connection drops, stdin reaches end of file here, and an orphaned agent
    would otherwise keep measuring and disturb the next bench.
    """
    if os.getpgrp() != os.getpid():
        os.setpgrp()  # lead a process group of our own, so the processes we start end with us

    def watch() -> None:
        try:
            while os.read(0, 1 << 16):
                pass
        except OSError:
            pass
        os.killpg(os.getpid(), signal.SIGKILL)  # the load and trtexec processes we started, and us
        os._exit(1)

    threading.Thread(target=watch, name="edgepack-stdin-watch", daemon=True).start()


def main(argv=None) -> int:
    guard = StdoutGuard()
    report = empty_report()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.load_probe:
            return load_probe(args, guard)
        if args.exit_with_stdin:
            exit_with_stdin()
        measure(args, report)
    except SystemExit as exc:  # --help
        if exc.code not in (0, None):
            report["errors"].append("exited with status %s" % exc.code)
        else:
            return 0
    except BaseException as exc:  # any failure is a report, never a traceback on stdout
        if not isinstance(exc, (AgentFailure, MemoryError)):
            traceback.print_exc(file=sys.stderr)
        report["errors"].append(describe(exc))
    report["ok"] = not report["errors"]
    guard.emit(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
