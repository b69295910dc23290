"""Load an edgepack bundle in an app and run it: float in, float out.

This file is copied into every bundle beside the model. It needs Python 3.8 or newer, numpy and
the bundle's runtime (ai_edge_litert, tflite_runtime or tensorflow.lite for a .tflite artifact;
onnxruntime for a .onnx one); it never imports edgepack. An app uses it like this::

    import edgepack_runtime

    model = edgepack_runtime.load("bundle-dir", background=True)  # returns at once
    ...                                                           # the app's other start-up work
    scores = model.predict(image)[0]                              # waits for the load if need be

``load(bundle_dir, background=False, cache=True)`` returns a `Model`:

- ``Model.predict(*arrays) -> list``: one float array per input, in the manifest's order; the
  loader applies the manifest's input and output quantization, so an int8 model takes and
  returns floats like the original. A missing batch axis is added (and removed again from the
  outputs); a batch larger than a fixed batch of 1 runs one sample at a time.
- ``Model.ready() -> bool``: True once loaded; False while a background load runs; raises the
  load's error when it failed.
- ``background=True``: the load runs in a thread; ``predict`` waits for it and raises its error.
- ``cache=True``: a model with the same artifact sha256 already loaded in this process is
  returned as it is, and the load-optimised form that ``edgepack bench`` made on this device is
  used where the bench found it correct and faster (see "Load cache" below).

Load cache (written by edgepack's agent, read here): ``<cache_dir>/<entry>/meta.json`` with the
files of one load-optimised form of one model, where ``cache_dir`` defaults to ``load-cache``
beside the bundle directory (the device workdir edgepack benches in) and ``entry`` is
`entry_name` of the artifact's sha256 and the runtime's name and version. The loader uses an
entry only when its meta.json names this model, this runtime and version, a form it knows,
``"use": true``, and every file with the size and modification time the agent recorded after
checking its sha256; anything else is loaded plain. The loader never writes to the cache.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time

import numpy as np

CACHE_FORMAT = 1  # the layout of meta.json; an entry of another format is not used
META = "meta.json"
LOAD_CACHE_DIR = "load-cache"
FORMS = ("onnx-optimized", "ort-format", "xnnpack-weight-cache")
DELEGATE_LIBRARIES = {
    "gpu": ["libtensorflowlite_gpu_delegate.so", "libtensorflowlite_gpu_gl.so"],
    "edgetpu": ["libedgetpu.so.1"],
}

_LOADED = {}  # (artifact sha256, threads, form, cache dir) -> Model: what cache=True reuses
_LOADED_LOCK = threading.Lock()


class LoadError(RuntimeError):
    """The bundle cannot be loaded: not a bundle, no runtime for it, or the runtime rejected the model."""


# ---------------------------------------------------------------- the load cache's layout


def entry_name(model_sha256: str, runtime: str, version) -> str:
    """Name of a model's load-cache entry: its sha256 and the runtime's name and version."""
    return "%s-%s-%s" % (model_sha256[:32], _safe(runtime), _safe(version or "unknown"))


def _safe(text) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", str(text))


def usable_entry(entry: str, model_sha256: str, runtime: str, version, forced: bool = False):
    """Return the entry's meta.json where the loader may use it, else (None, why not).

    Cheap enough for every load: no hashing. The agent checked each file's sha256 when it made
    or last checked the entry and recorded its size and modification time; a file changed since
    (rewritten, truncated, copied) no longer matches them. FORCED ignores ``use`` (the bench's
    own measurement of the form).
    """
    path = os.path.join(entry, META)
    if not os.path.isfile(path):
        return None, "no load-optimised form in %s" % entry
    try:
        with open(path, "r", encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        return None, "unreadable %s: %s" % (path, exc)
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return None, "%s is not load-cache format %d" % (path, CACHE_FORMAT)
    rt = meta.get("runtime") or {}
    if meta.get("model_sha256") != model_sha256 or rt.get("name") != runtime or rt.get("version") != version:
        return None, "%s was made for another model or runtime version" % path
    if meta.get("form") not in FORMS or not isinstance(meta.get("model"), str):
        return None, "%s names a form this loader does not know: %r" % (path, meta.get("form"))
    files = meta.get("files")
    if not isinstance(files, list) or not files or not all(isinstance(f, dict) and os.path.basename(str(f.get("path"))) == f.get("path") for f in files) \
            or meta["model"] not in [f["path"] for f in files]:
        return None, "%s does not list its files (the model among them)" % path
    for f in files:
        try:
            st = os.stat(os.path.join(entry, f["path"]))
        except (OSError, KeyError, TypeError):
            return None, "a file of %s is missing" % entry
        if st.st_size != f.get("bytes") or st.st_mtime_ns != f.get("mtime_ns"):
            return None, "%s changed after the bench checked it" % os.path.join(entry, f["path"])
    if meta.get("answers_ok") is not True:
        return None, "the bench did not find the %s form's answers as good as the plain load's: %s" % (meta["form"], meta.get("why") or "not checked")
    if not forced and meta.get("use") is not True:
        return None, "the bench found the %s form no faster: %s" % (meta["form"], meta.get("why") or "no reason given")
    return meta, None


# ---------------------------------------------------------------- bundle


def read_manifest(bundle_dir: str) -> dict:
    path = os.path.join(bundle_dir, "manifest.json")
    if not os.path.isfile(path):
        raise LoadError("%s is not a bundle: it has no manifest.json" % bundle_dir)
    try:
        with open(path, "r", encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise LoadError("unreadable %s: %s" % (path, exc))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifact"), str):
        raise LoadError("%s names no artifact" % path)
    if not os.path.isfile(os.path.join(bundle_dir, manifest["artifact"])):
        raise LoadError("%s: the artifact %s is missing" % (bundle_dir, manifest["artifact"]))
    return manifest


def artifact_sha256(manifest: dict, bundle_dir: str) -> str:
    """The artifact's sha256 as the manifest lists it (hashed here only where it does not)."""
    for f in manifest.get("files") or []:
        if isinstance(f, dict) and f.get("path") == manifest["artifact"] and f.get("sha256"):
            return f["sha256"]
    import hashlib

    h = hashlib.sha256()
    with open(os.path.join(bundle_dir, manifest["artifact"]), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _profile_runtime(manifest: dict) -> dict:
    runtime = (manifest.get("profile") or {}).get("runtime") or {}
    return runtime if isinstance(runtime, dict) else {}


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Spec:
    """One manifest input or output: name, shape (None: dynamic), the runtime's dtype, quantization."""

    def __init__(self, d: dict):
        self.name = d.get("name")
        self.shape = list(d.get("shape") or [])
        self.dtype = np.dtype(d.get("dtype") or "float32")
        self.scale = d.get("scale") or None
        self.zero_point = int(d.get("zero_point") or 0)

    def to_runtime(self, x):
        x = np.asarray(x)
        if self.dtype.kind in "iu" and self.scale:
            info = np.iinfo(self.dtype)
            q = np.round(x.astype(np.float64) / self.scale + self.zero_point)
            return np.clip(q, info.min, info.max).astype(self.dtype)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def to_float(self, y):
        y = np.asarray(y)
        if y.dtype.kind in "iu" and self.scale:
            return ((y.astype(np.float32) - self.zero_point) * np.float32(self.scale)).astype(np.float32)
        return y.astype(np.float32)


# ---------------------------------------------------------------- runtimes


def import_tflite():
    """Return (runtime name, version, Interpreter, load_delegate) of the first TFLite runtime that imports."""
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
    raise LoadError("no TFLite runtime importable (" + "; ".join(reasons) + ")")


class _TFLite:
    """A .tflite artifact: plain through the Interpreter, or LiteRT's CompiledModel with its XNNPACK weight cache."""

    def __init__(self, model_path: str, threads: int, delegates, notes: list, phases: dict):
        t0 = time.perf_counter_ns()
        self.name, self.version, self._Interpreter, self._load_delegate = import_tflite()
        phases["import"] = (time.perf_counter_ns() - t0) / 1e6
        self.model_path, self.threads, self.delegates, self.notes, self.phases = model_path, threads, delegates, notes, phases
        self.lock = threading.Lock()  # an interpreter runs one call at a time

    def _external_delegates(self) -> list:
        loaded = []
        for name in self.delegates:
            if name.lower() == "xnnpack":
                continue  # built in, applied by default
            for library in DELEGATE_LIBRARIES.get(name.lower(), [name] if ("/" in name or ".so" in name) else []):
                try:
                    loaded.append(self._load_delegate(library))
                    break
                except Exception:
                    continue
            else:
                self.notes.append("%s delegate not available here; runs on the CPU" % name)
        return loaded

    def load_plain(self, input_specs, output_specs) -> None:
        t0 = time.perf_counter_ns()
        with open(self.model_path, "rb") as f:
            content = f.read()
        t1 = time.perf_counter_ns()
        kwargs = {"model_content": content, "num_threads": self.threads}
        delegates = self._external_delegates()
        if delegates:
            kwargs["experimental_delegates"] = delegates
        it = self._Interpreter(**kwargs)
        t2 = time.perf_counter_ns()
        it.allocate_tensors()
        t3 = time.perf_counter_ns()
        self.phases.update(read_file=(t1 - t0) / 1e6, build_interpreter=(t2 - t1) / 1e6, allocate_tensors=(t3 - t2) / 1e6)
        self.interpreter = it
        self.in_index = self._indices(it, it.get_input_details(), input_specs, "inputs")
        self.out_index = self._indices(it, it.get_output_details(), output_specs, "outputs")
        self.run = self._run_interpreter

    @staticmethod
    def _indices(it, details, specs, kind) -> list:
        """Tensor index of each manifest spec: by signature name (the manifest's names), else by position."""
        by_name = {}
        try:
            signatures = it.get_signature_list()
            if len(signatures) == 1:
                runner = it.get_signature_runner(next(iter(signatures)))
                sig = runner.get_input_details() if kind == "inputs" else runner.get_output_details()
                by_name = dict((name, d["index"]) for name, d in sig.items())
        except Exception:
            by_name = {}
        if by_name and all(s.name in by_name for s in specs):
            return [by_name[s.name] for s in specs]
        if len(details) != len(specs):
            raise LoadError("the model has %d %s; the manifest lists %d" % (len(details), kind, len(specs)))
        return [d["index"] for d in details]

    def _run_interpreter(self, arrays) -> list:
        with self.lock:
            for index, a in zip(self.in_index, arrays):
                self.interpreter.set_tensor(index, a)
            self.interpreter.invoke()
            return [self.interpreter.get_tensor(i) for i in self.out_index]

    def load_cached(self, entry: str, meta: dict, input_specs, output_specs) -> None:
        t0 = time.perf_counter_ns()
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.options import CpuOptions, Options

        t1 = time.perf_counter_ns()
        cache_file = os.path.join(entry, meta["model"])
        options = Options(cpu_options=CpuOptions(num_threads=self.threads, xnnpack_weight_cache_path=cache_file))
        model = CompiledModel.from_file(self.model_path, options=options)
        t2 = time.perf_counter_ns()
        key = next(iter(model.get_signature_list()))
        signature = model.get_signature_list()[key]
        index = model.get_signature_index(key)
        ins, outs = model.create_input_buffers(index), model.create_output_buffers(index)
        t3 = time.perf_counter_ns()
        self.phases.update(import_compiled_model=(t1 - t0) / 1e6, create_compiled_model=(t2 - t1) / 1e6, create_buffers=(t3 - t2) / 1e6)
        in_names, out_names = list(signature["inputs"]), list(signature["outputs"])
        out_details = model.get_output_tensor_details(key)
        in_pos = _positions(in_names, [s.name for s in input_specs], "inputs")
        out_pos = _positions(out_names, [s.name for s in output_specs], "outputs")
        shapes = [[int(v) for v in out_details[n]["shape"]] for n in out_names]
        self.compiled = (model, index, ins, outs, in_pos, out_pos, shapes)

        def run(arrays):
            with self.lock:
                for k, a in zip(in_pos, arrays):
                    ins[k].write(a)
                model.run_by_index(index, ins, outs)
                return [outs[k].read(int(np.prod(shapes[k])), output_specs[j].dtype).reshape(shapes[k]) for j, k in enumerate(out_pos)]

        self.run = run


def _positions(runtime_names: list, manifest_names: list, kind: str) -> list:
    """Where each manifest tensor sits among the runtime's: by name, else by position."""
    if sorted(runtime_names) == sorted(manifest_names):
        return [runtime_names.index(n) for n in manifest_names]
    if len(runtime_names) != len(manifest_names):
        raise LoadError("the model has %d %s; the manifest lists %d" % (len(runtime_names), kind, len(manifest_names)))
    return list(range(len(manifest_names)))


class _Ort:
    """A .onnx artifact through ONNX Runtime: plain, or a graph ONNX Runtime optimised once on this device."""

    def __init__(self, model_path: str, threads: int, providers, notes: list, phases: dict, engine_cache=None):
        t0 = time.perf_counter_ns()
        try:
            import onnxruntime
        except Exception as exc:
            raise LoadError("onnxruntime is not importable: %s" % exc)
        phases["import"] = (time.perf_counter_ns() - t0) / 1e6
        self.ort, self.name, self.version = onnxruntime, "onnxruntime", getattr(onnxruntime, "__version__", None)
        available = onnxruntime.get_available_providers()
        wanted = [p for p in (providers or ["CPUExecutionProvider"]) if p in available]
        missing = [p for p in (providers or []) if p not in available]
        if missing:
            notes.append("provider %s not available here" % ", ".join(missing))
        self.providers = wanted or ["CPUExecutionProvider"]
        self.model_path, self.threads, self.notes, self.phases, self.engine_cache = model_path, threads, notes, phases, engine_cache

    @property
    def cpu_only(self) -> bool:
        return self.providers == ["CPUExecutionProvider"]

    def _options(self, optimise: bool):
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        if not optimise:  # the graph was optimised when the cached form was made
            options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return options

    def _provider_args(self) -> list:
        out = []
        for name in self.providers:
            if name == "TensorrtExecutionProvider" and self.engine_cache and os.path.isdir(self.engine_cache):
                out.append((name, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": self.engine_cache, "trt_timing_cache_enable": "True"}))
            else:
                out.append(name)
        return out

    def _session(self, path: str, options, input_specs, output_specs) -> None:
        t0 = time.perf_counter_ns()
        try:
            session = self.ort.InferenceSession(path, sess_options=options, providers=self._provider_args())
        except Exception:
            if self.cpu_only:
                raise
            session = self.ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
            self.notes.append("providers %s could not start; runs on CPUExecutionProvider" % ", ".join(self.providers))
            self.providers = ["CPUExecutionProvider"]
        self.phases["create_session"] = (time.perf_counter_ns() - t0) / 1e6
        in_names = [i.name for i in session.get_inputs()]
        out_names = [o.name for o in session.get_outputs()]
        ins = [in_names[k] for k in _positions(in_names, [s.name for s in input_specs], "inputs")]
        outs = [out_names[k] for k in _positions(out_names, [s.name for s in output_specs], "outputs")]
        self.session = session
        self.run = lambda arrays: session.run(outs, dict(zip(ins, arrays)))

    def load_plain(self, input_specs, output_specs) -> None:
        self._session(self.model_path, self._options(True), input_specs, output_specs)

    def load_cached(self, entry: str, meta: dict, input_specs, output_specs) -> None:
        options = self._options(False)
        if meta["form"] == "ort-format":
            options.add_session_config_entry("session.load_model_format", "ORT")
        self._session(os.path.join(entry, meta["model"]), options, input_specs, output_specs)


# ---------------------------------------------------------------- the model


class Model:
    """A loaded (or loading) bundle: ``predict``, ``ready``, and what was loaded how.

    Attributes:
        bundle: the bundle directory. engine: "tflite" or "onnxruntime". form: "plain" or the
        load-optimised form used ("onnx-optimized", "ort-format", "xnnpack-weight-cache").
        runtime: (name, version). threads. load_ms: the load (import of the runtime not included).
        phases_ms: where the load's time went (and "first_inference" once predict ran).
        notes: what did not go as asked (a delegate missing, a cache entry not used and why).
        inputs / outputs: the manifest's specs (name, shape, dtype, scale, zero_point).
    """

    def __init__(self, bundle: str, manifest: dict, threads: int, form, cache_dir: str):
        self.bundle, self.manifest, self.threads = bundle, manifest, threads
        self.inputs = list(manifest.get("inputs") or [])
        self.outputs = list(manifest.get("outputs") or [])
        self._in = [_Spec(d) for d in self.inputs]
        self._out = [_Spec(d) for d in self.outputs]
        self.engine = "onnxruntime" if manifest["artifact"].lower().endswith(".onnx") else "tflite"
        self.form, self.runtime, self.load_ms = None, None, None
        self.phases_ms, self.notes = {}, []
        self._wanted, self._cache_dir = form, cache_dir
        self._done = threading.Event()
        self._error = None
        self._backend = None
        self._first = True

    # -- loading

    def _load(self) -> None:
        try:
            self._load_now()
        except Exception as exc:  # kept for ready() and predict(): a background load's error is never lost
            error = exc
            if not isinstance(exc, LoadError):
                error = LoadError("cannot load %s: %s: %s" % (self.bundle, type(exc).__name__, exc))
                error.__cause__ = exc
            self._error = error
        finally:
            self._done.set()

    def _load_now(self) -> None:
        model_path = os.path.join(self.bundle, self.manifest["artifact"])
        runtime = _profile_runtime(self.manifest)
        if self.engine == "tflite":
            backend = _TFLite(model_path, self.threads, runtime.get("delegates") or [], self.notes, self.phases_ms)
        else:
            engine_cache = os.path.join(os.path.dirname(self.bundle), "engine-cache")
            backend = _Ort(model_path, self.threads, runtime.get("providers") or [], self.notes, self.phases_ms, engine_cache)
        self.runtime = (backend.name, backend.version)
        meta, entry = None, None
        if self._wanted != "plain":
            sha = artifact_sha256(self.manifest, self.bundle)
            entry = os.path.join(self._cache_dir, entry_name(sha, backend.name, backend.version))
            meta, why = usable_entry(entry, sha, backend.name, backend.version, forced=self._wanted == "optimized")
            if meta is not None and self.engine == "onnxruntime" and not backend.cpu_only:
                meta, why = None, "the optimised graph was made for CPUExecutionProvider; this load uses %s" % ", ".join(backend.providers)
            if meta is None:
                if self._wanted == "optimized":
                    raise LoadError("no usable load-optimised form for %s: %s (run `edgepack bench` on this device first)" % (self.bundle, why))
                self.notes.append("plain load: " + why)
        t0 = time.perf_counter_ns()
        if meta is not None:
            try:
                backend.load_cached(entry, meta, self._in, self._out)
                self.form = meta["form"]
            except Exception as exc:
                if self._wanted == "optimized":
                    raise LoadError("the %s form in %s failed to load: %s" % (meta["form"], entry, exc))
                self.notes.append("the %s form failed to load (%s); loaded plain" % (meta["form"], exc))
                meta = None
                for name in [n for n in self.phases_ms if n != "import"]:
                    del self.phases_ms[name]
        if meta is None:
            t0 = time.perf_counter_ns()
            backend.load_plain(self._in, self._out)
            self.form = "plain"
        # An API the cached form needs (LiteRT's CompiledModel) is imported inside its load: not the load's time.
        self.load_ms = (time.perf_counter_ns() - t0) / 1e6 - self.phases_ms.get("import_compiled_model", 0.0)
        self._backend = backend

    # -- using

    def wait(self, timeout=None) -> "Model":
        """Wait for a background load; return the model. Raises its LoadError, or TimeoutError."""
        if not self._done.wait(timeout):
            raise TimeoutError("%s is still loading after %s s" % (self.bundle, timeout))
        if self._error is not None:
            raise self._error
        return self

    def ready(self) -> bool:
        """True once loaded, False while loading; raises the load's LoadError when it failed."""
        if not self._done.is_set():
            return False
        if self._error is not None:
            raise self._error
        return True

    def predict(self, *arrays) -> list:
        """Run the model on float ARRAYS (one per input); return one float32 array per output.

        Raises:
            LoadError: the load failed. ValueError: the arrays do not fit the model's inputs.
        """
        self.wait()
        if len(arrays) != len(self._in):
            raise ValueError("the model takes %d input(s); %d given" % (len(self._in), len(arrays)))
        xs, added = [], False
        for k, (a, spec) in enumerate(zip(arrays, self._in)):
            a = np.asarray(a)
            if spec.shape and a.ndim == len(spec.shape) - 1:
                a, added = a[None], True
            if spec.shape and (a.ndim != len(spec.shape) or any(w is not None and w != g for w, g in zip(spec.shape[1:], a.shape[1:]))):
                raise ValueError("input %d (%s) has shape %s; the model takes %s" % (k, spec.name, list(np.shape(arrays[k])), spec.shape))
            xs.append(a)
        batch = self._in[0].shape[0] if self._in and self._in[0].shape else None
        n = len(xs[0]) if xs and xs[0].ndim else 1
        if n == 0:
            raise ValueError("an empty batch: give at least one sample")
        if batch is not None and batch != n:
            if batch != 1:
                raise ValueError("the model takes batches of exactly %d; %d given" % (batch, n))
            parts = [self._call([x[i:i + 1] for x in xs]) for i in range(n)]
            outs = [np.concatenate([p[k] for p in parts]) for k in range(len(self._out))]
        else:
            outs = self._call(xs)
        return [o[0] for o in outs] if added else outs

    def _call(self, xs) -> list:
        fed = [spec.to_runtime(x) for x, spec in zip(xs, self._in)]
        t0 = time.perf_counter_ns()
        ys = self._backend.run(fed)
        if self._first:
            self._first = False
            self.phases_ms["first_inference"] = (time.perf_counter_ns() - t0) / 1e6
        return [spec.to_float(y) for y, spec in zip(ys, self._out)]

    def __repr__(self) -> str:
        state = "loading" if not self._done.is_set() else "failed" if self._error else "%s, %s" % (self.form, self.runtime[0])
        return "<edgepack_runtime.Model %s (%s)>" % (self.bundle, state)


def load(bundle_dir, background: bool = False, cache: bool = True, threads=None, form=None, cache_dir=None) -> Model:
    """Load the bundle in BUNDLE_DIR for predict().

    Args:
        bundle_dir: a bundle directory (manifest.json, the artifact).
        background: return at once and load in a thread; predict() waits for it.
        cache: reuse a model of the same artifact already loaded in this process, and use the
            load-optimised form the bench made on this device where it is usable.
        threads: runtime threads [default: the bundle profile's runtime.threads, else all usable cores].
        form: None (the optimised form where usable, else plain), "plain", or "optimized" (the
            optimised form or a LoadError).
        cache_dir: the load cache [default: load-cache beside the bundle directory].

    Returns:
        The Model; loaded unless BACKGROUND.

    Raises:
        LoadError: not a bundle, or (without BACKGROUND) the load failed. ValueError: bad FORM or THREADS,
            or form="optimized" with cache=False.
    """
    if form not in (None, "plain", "optimized"):
        raise ValueError("form must be None, 'plain' or 'optimized', not %r" % (form,))
    bundle = os.path.abspath(os.fspath(bundle_dir))
    manifest = read_manifest(bundle)
    if threads is None:
        threads = _profile_runtime(manifest).get("threads") or _usable_cores()
    if not isinstance(threads, int) or threads < 1:
        raise ValueError("threads must be a whole number >= 1, not %r" % (threads,))
    if not cache:
        if form == "optimized":
            raise ValueError("form='optimized' needs cache=True: the optimised form is what the load cache holds")
        form = "plain"
    cache_dir = os.path.abspath(cache_dir) if cache_dir else os.path.join(os.path.dirname(bundle), LOAD_CACHE_DIR)
    key = (artifact_sha256(manifest, bundle), threads, form, cache_dir)
    with _LOADED_LOCK:
        model = _LOADED.get(key) if cache else None
        if model is not None and model._done.is_set() and model._error is not None:
            model = None  # a failed load is tried again
        fresh = model is None
        if fresh:
            model = Model(bundle, manifest, threads, form, cache_dir)
            if cache:
                _LOADED[key] = model
    if fresh:
        if background:
            threading.Thread(target=model._load, name="edgepack-load", daemon=True).start()
        else:
            model._load()
    if not background:
        model.wait()
    return model
