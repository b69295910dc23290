"""Load an edgepack bundle in an app and run it: float in, float out.

This file is copied into every bundle beside the model. It needs Python 3.8 or newer, numpy and
the bundle's runtime (ai_edge_litert, tflite_runtime or tensorflow.lite for a .tflite artifact;
onnxruntime for a .onnx one); it never imports the rest of edgepack (it is assembled from
edgepack/ondevice/ into this one file). An app uses it like this::

    import edgepack_runtime

    model = edgepack_runtime.load("bundle-dir", background=True)  # returns at once
    ...                                                           # the app's other start-up work
    scores = model.predict(image)[0]                              # waits for the load if need be

``load(bundle_dir, background=False, cache=True)`` returns a `Model`. The artifact is checked against
the manifest's size and sha256 first (hashed once per process while the file is unchanged, and not at
all where the bench on this device recorded that it checked this very file) and must be a file of
the bundle itself; a replaced model is a LoadError, never loaded.


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
checking its sha256; anything else is loaded plain. The loader never writes to the cache: it follows no symbolic link
there, and LiteRT (which rewrites a weight cache file it does not accept, in place) gets a private copy of it.
"""

from __future__ import annotations

import os
import threading
import time

from .artifact import AppSpec, LoadError, artifact_sha256, listed_artifact, profile_runtime, read_manifest
from .backends import AppOrt, AppTFLite
from .cachemeta import usable_entry
from .common import LOAD_CACHE_DIR, entry_name, np, usable_cores

LOADED = {}  # (artifact sha256, threads, form, cache dir, providers) -> Model: what cache=True reuses
LOADED_LOCK = threading.Lock()


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

    def __init__(self, bundle: str, manifest: dict, threads: int, form, cache_dir: str, providers=None):
        self._providers = providers
        self.bundle, self.manifest, self.threads = bundle, manifest, threads
        self.inputs = list(manifest.get("inputs") or [])
        self.outputs = list(manifest.get("outputs") or [])
        self._in = [AppSpec(d) for d in self.inputs]
        self._out = [AppSpec(d) for d in self.outputs]
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
        t0 = time.perf_counter_ns()
        sha = artifact_sha256(self.manifest, self.bundle, self._cache_dir)  # a replaced model is refused here, in the load's thread
        self.phases_ms["check_artifact"] = (time.perf_counter_ns() - t0) / 1e6
        runtime = profile_runtime(self.manifest)
        if self.engine == "tflite":
            backend = AppTFLite(model_path, self.threads, runtime.get("delegates") or [], self.notes, self.phases_ms)
        else:
            engine_cache = os.path.join(os.path.dirname(self.bundle), "engine-cache")
            providers = self._providers if self._providers is not None else runtime.get("providers") or []
            backend = AppOrt(model_path, self.threads, providers, self.notes, self.phases_ms, engine_cache)
        self.runtime = (backend.name, backend.version)
        meta, entry = None, None
        if self._wanted != "plain":
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


def load(bundle_dir, background: bool = False, cache: bool = True, threads=None, form=None, cache_dir=None, providers=None) -> Model:
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
        providers: ONNX Runtime execution providers, in order [default: the bundle profile's runtime.providers].

    Returns:
        The Model; loaded unless BACKGROUND.

    Raises:
        LoadError: not a bundle, an artifact that is not the manifest's, or (without BACKGROUND) the load failed. ValueError: bad FORM or THREADS,
            or form="optimized" with cache=False.
    """
    if form not in (None, "plain", "optimized"):
        raise ValueError("form must be None, 'plain' or 'optimized', not %r" % (form,))
    bundle = os.path.abspath(os.fspath(bundle_dir))
    manifest = read_manifest(bundle)
    if threads is None:
        threads = profile_runtime(manifest).get("threads") or usable_cores() or 1
    if not isinstance(threads, int) or threads < 1:
        raise ValueError("threads must be a whole number >= 1, not %r" % (threads,))
    if not cache:
        if form == "optimized":
            raise ValueError("form='optimized' needs cache=True: the optimised form is what the load cache holds")
        form = "plain"
    cache_dir = os.path.abspath(cache_dir) if cache_dir else os.path.join(os.path.dirname(bundle), LOAD_CACHE_DIR)
    if providers is not None and (not isinstance(providers, (list, tuple)) or not all(isinstance(p, str) for p in providers)):
        raise ValueError("providers must be a list of provider names, not %r" % (providers,))
    providers = list(providers) if providers is not None else None
    key = (listed_artifact(manifest, bundle)["sha256"], threads, form, cache_dir, tuple(providers) if providers is not None else None)
    with LOADED_LOCK:
        model = LOADED.get(key) if cache else None
        if model is not None and model._done.is_set() and model._error is not None:
            model = None  # a failed load is tried again
        fresh = model is None
        if fresh:
            model = Model(bundle, manifest, threads, form, cache_dir, providers)
            if cache:
                LOADED[key] = model
    if fresh:
        if background:
            threading.Thread(target=model._load, name="edgepack-load", daemon=True).start()
        else:
            model._load()
    if not background:
        model.wait()
    return model
