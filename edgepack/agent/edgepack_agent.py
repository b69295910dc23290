"""Measure a bundle on this device and print one JSON report.

This file is pushed to the device and run with the device's own Python (3.8 or newer). It
needs only the standard library, numpy and whichever runtime is installed; it never imports
edgepack. The host validates the report with ``edgepack.agent.protocol``: keep the two in sync.

Usage:
    python edgepack_agent.py BUNDLE_DIR [--runs N] [--warmup N] [--min-seconds S]
        [--cold-loads N] [--threads N] [--engine tflite|onnxruntime]
        [--delegates a,b] [--providers A,B]

stdout carries exactly one JSON document and nothing else: file descriptor 1 is pointed at
stderr while runtimes are imported and used (their C++ code may print), and the report is
written to the saved original at the end. Exit status 0 when ``ok``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback

try:
    import numpy as np
except ImportError as _exc:  # reported as ok:false by main()
    np = None
    NUMPY_ERROR = str(_exc)

PROTOCOL_VERSION = 1
MAX_RUNS = 100000
PROBE_TIMEOUT_S = 600
ENGINES = ("tflite", "onnxruntime")
SUFFIX_ENGINE = {".tflite": "tflite", ".onnx": "onnxruntime"}
# Where a delegate name is not a path, the libraries to try, in order.
DELEGATE_LIBRARIES = {
    "gpu": ["libtensorflowlite_gpu_delegate.so", "libtensorflowlite_gpu_gl.so"],
    "edgetpu": ["libedgetpu.so.1"],
}
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
    p.add_argument("--load-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--evict", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("runs", "warmup", "cold_loads"):
        if getattr(args, name) < 0:
            raise AgentFailure("bad arguments: --%s must be >= 0" % name.replace("_", "-"))
    if args.min_seconds < 0:
        raise AgentFailure("bad arguments: --min-seconds must be >= 0")
    if args.threads is not None and args.threads < 1:
        raise AgentFailure("bad arguments: --threads must be >= 1")
    args.delegates = split_list(args.delegates)
    args.providers = split_list(args.providers)
    return args


def split_list(text: str) -> list:
    return [item.strip() for item in text.split(",") if item.strip()]


# ---------------------------------------------------------------- bundle


def read_bundle(bundle: str):
    """Return (manifest dict, model path, reference dict or None)."""
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
    reference = None
    ref_path = os.path.join(bundle, "reference.npz")
    if os.path.isfile(ref_path):
        try:
            with np.load(ref_path, allow_pickle=False) as z:
                reference = {k: z[k] for k in z.files}
        except Exception as exc:
            raise AgentFailure("unreadable reference.npz: %s" % exc)
    return manifest, model_path, reference


def pick_engine(model_path: str, requested) -> str:
    suffix = os.path.splitext(model_path)[1].lower()
    implied = SUFFIX_ENGINE.get(suffix)
    if requested and implied and requested != implied:
        raise AgentFailure("--engine %s cannot load a %s artifact (use --engine %s)" % (requested, suffix, implied))
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
        delegates, self.loaded_delegates = self._delegates()
        kwargs = {"model_path": model_path}
        if self.threads is not None:
            kwargs["num_threads"] = self.threads
        if delegates:
            kwargs["experimental_delegates"] = delegates
        self.interpreter = self.Interpreter(**kwargs)
        self.interpreter.allocate_tensors()

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
        return {"name": self.name, "version": self.version, "delegates": self.delegates_used(), "providers": [], "threads": self.threads}


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

    def load(self, model_path: str) -> None:
        options = self.ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        self.session = self.ort.InferenceSession(model_path, sess_options=options, providers=self.providers)

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
            return {"name": self.name, "version": self.version, "delegates": [], "providers": [], "threads": self.threads}
        used = list(self.session.get_providers())
        dropped = [p for p in self.providers if p not in used]
        if dropped:
            self.notes.append("provider %s is available but the session did not use it; ran on %s" % (", ".join(dropped), ", ".join(used)))
        return {"name": self.name, "version": self.version, "delegates": [], "providers": used, "threads": self.threads}


def make_runtime(engine: str, args, manifest):
    if engine == "tflite":
        return TFLiteRuntime(args)
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


def timed_load(runtime, model_path: str) -> float:
    """Load the model and return the milliseconds it took; a rejected model is an AgentFailure."""
    t0 = time.perf_counter_ns()
    try:
        runtime.load(model_path)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise AgentFailure(
            "%s %s rejected %s: %s" % (runtime.name, runtime.version, os.path.basename(model_path), first_line(exc))
        )
    return (time.perf_counter_ns() - t0) / 1e6


def load_probe(args, guard: StdoutGuard) -> int:
    """Child mode: import the runtime, optionally evict the model, time one load, print it."""
    try:
        if np is None:
            raise AgentFailure("numpy is not importable: %s" % NUMPY_ERROR)
        manifest, model_path, _ = read_bundle(args.bundle)
        runtime = make_runtime(pick_engine(model_path, args.engine), args, manifest)
        evicted, note = evict_page_cache(model_path) if args.evict else (False, None)
        load_ms = timed_load(runtime, model_path)
        guard.emit({"ok": True, "load_ms": load_ms, "evicted": evicted, "note": note})
        return 0
    except BaseException as exc:
        guard.emit({"ok": False, "error": describe(exc)})
        return 1


def probe_loads(args, count: int, evict: bool) -> tuple:
    """Time COUNT loads, each in a fresh process; return (samples, evicted, notes, error)."""
    cmd = [sys.executable, os.path.abspath(__file__), args.bundle, "--load-probe"]
    if args.engine:
        cmd += ["--engine", args.engine]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.delegates:
        cmd += ["--delegates", ",".join(args.delegates)]
    if args.providers:
        cmd += ["--providers", ",".join(args.providers)]
    if evict:
        cmd.append("--evict")
    samples, evicted, notes = [], True, []
    for _ in range(count):
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return samples, False, notes, "load probe took longer than %d s" % PROBE_TIMEOUT_S
        lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError):
            result = None
        if proc.returncode < 0:  # this process would die the same way: stop before loading here
            raise AgentFailure("the runtime crashed (signal %d) loading the model" % -proc.returncode)
        if not isinstance(result, dict) or not result.get("ok"):
            error = result.get("error") if isinstance(result, dict) else None
            if not error:
                tail = [l for l in proc.stderr.decode("utf-8", "replace").splitlines() if l.strip()]
                error = "load probe exited %d: %s" % (proc.returncode, tail[-1] if tail else "no output")
            return samples, False, notes, error
        samples.append(float(result["load_ms"]))
        evicted = evicted and bool(result.get("evicted"))
        if result.get("note") and result["note"] not in notes:
            notes.append(result["note"])
    return samples, evicted and count > 0, notes, None


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
    batch = spec0.shape[0] if spec0.shape else None
    if batch is None or batch == n:
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
    }


def measure(args, report: dict) -> None:
    """Fill REPORT; raise on the first failure that stops the measurement."""
    notes = report["notes"]
    report["system"] = system_info()
    if np is None:
        raise AgentFailure("numpy is not importable: %s" % NUMPY_ERROR)
    manifest, model_path, reference = read_bundle(args.bundle)
    engine = pick_engine(model_path, args.engine)
    if args.threads is None:
        args.threads = usable_cores()
    runtime = make_runtime(engine, args, manifest)
    baseline_mb, baseline_method = rss_mb("VmRSS")
    notes.extend(runtime.notes)
    runtime.notes = notes  # the runtime's notes reach the report even when a later step fails
    report["runtime"] = runtime.info()  # refined once the model is loaded

    # Fresh processes before this one maps the model: a mapping would pin its pages in the cache.
    cold, cold_evicted, cold_notes, error = probe_loads(args, args.cold_loads, evict=True)
    if error is None:
        warm, _, _, error = probe_loads(args, max(args.cold_loads, 1), evict=False)
    else:
        warm = []
    notes.extend(cold_notes)
    in_process_ms = timed_load(runtime, model_path)  # raises the runtime's own reason on a bad model
    if error is not None:
        report["errors"].append("load probe failed: %s" % error)
    report["load"] = {
        "cold_ms": cold,
        "warm_ms": warm,
        "in_process_ms": in_process_ms,
        "cold_evicted": cold_evicted if args.cold_loads else None,
        "method": (
            "perf_counter_ns around model load (%s) after the runtime import; cold and warm each in a "
            "fresh process, cold after fsync + posix_fadvise(POSIX_FADV_DONTNEED) of the model file"
            % ("interpreter construction + allocate_tensors" if engine == "tflite" else "InferenceSession creation")
        ),
    }

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

    if reference is not None:
        try:
            report["check"] = check_outputs(runtime, in_specs, out_specs, reference, notes)
        except AgentFailure as exc:
            report["errors"].append("reference check failed: %s" % exc)
    peak_mb, peak_method = rss_mb("VmHWM")
    report["memory"] = {
        "baseline_rss_mb": baseline_mb,
        "peak_rss_mb": peak_mb,
        "delta_mb": round(peak_mb - baseline_mb, 3) if peak_mb is not None and baseline_mb is not None else None,
        "method": "baseline: %s after the runtime import; peak: %s after load, inference and check"
        % (baseline_method, peak_method),
    }
    report["runtime"] = runtime.info()


def main(argv=None) -> int:
    guard = StdoutGuard()
    report = empty_report()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.load_probe:
            return load_probe(args, guard)
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
