"""The loader's runtimes: a .tflite artifact through the Interpreter or LiteRT's CompiledModel, a .onnx one through ONNX Runtime."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time

from .artifact import LoadError, positions
from .common import DELEGATE_LIBRARIES, np
from .runtimes import import_tflite, quiet_stderr


def private_copy(path: str) -> str:
    """Copy the cache file PATH (never through a link) into a directory of this process's own; return the copy.

    LiteRT (ai_edge_litert 2.3.0) leaves a valid XNNPACK weight cache as it is but rewrites one it
    does not accept in place, and creates a missing one: the app's load uses this copy, so the shared
    cache is only ever read. The directory goes at exit.
    """
    folder = tempfile.mkdtemp(prefix="edgepack-weight-cache-")
    atexit.register(shutil.rmtree, folder, True)
    copy = os.path.join(folder, os.path.basename(path))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as src, open(copy, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return copy


class AppTFLite:
    """A .tflite artifact: plain through the Interpreter, or LiteRT's CompiledModel with its XNNPACK weight cache."""

    def __init__(self, model_path: str, threads: int, delegates, notes: list, phases: dict):
        t0 = time.perf_counter_ns()
        try:
            self.name, self.version, self.Interpreter, self.load_delegate = import_tflite()
        except ImportError as exc:
            raise LoadError(str(exc))
        phases["import"] = (time.perf_counter_ns() - t0) / 1e6
        self.model_path, self.threads, self.delegates, self.notes, self.phases = model_path, threads, delegates, notes, phases
        self.lock = threading.Lock()  # an interpreter runs one call at a time

    def external_delegates(self) -> list:
        loaded = []
        for name in self.delegates:
            if name.lower() == "xnnpack":
                continue  # built in, applied by default
            for library in DELEGATE_LIBRARIES.get(name.lower(), [name] if ("/" in name or ".so" in name) else []):
                try:
                    loaded.append(self.load_delegate(library))
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
        delegates = self.external_delegates()
        if delegates:
            kwargs["experimental_delegates"] = delegates
        with quiet_stderr():
            it = self.Interpreter(**kwargs)
            t2 = time.perf_counter_ns()
            it.allocate_tensors()
        t3 = time.perf_counter_ns()
        self.phases.update(read_file=(t1 - t0) / 1e6, build_interpreter=(t2 - t1) / 1e6, allocate_tensors=(t3 - t2) / 1e6)
        self.interpreter = it
        self.in_index = self.indices(it, it.get_input_details(), input_specs, "inputs")
        self.out_index = self.indices(it, it.get_output_details(), output_specs, "outputs")
        self.run = self.run_interpreter

    @staticmethod
    def indices(it, details, specs, kind) -> list:
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

    def run_interpreter(self, arrays) -> list:
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
        cache_file = private_copy(os.path.join(entry, meta["model"]))
        t2 = time.perf_counter_ns()
        options = Options(cpu_options=CpuOptions(num_threads=self.threads, xnnpack_weight_cache_path=cache_file))
        with quiet_stderr():
            model = CompiledModel.from_file(self.model_path, options=options)
        t3 = time.perf_counter_ns()
        key = next(iter(model.get_signature_list()))
        signature = model.get_signature_list()[key]
        index = model.get_signature_index(key)
        ins, outs = model.create_input_buffers(index), model.create_output_buffers(index)
        t4 = time.perf_counter_ns()
        self.phases.update(import_compiled_model=(t1 - t0) / 1e6, copy_weight_cache=(t2 - t1) / 1e6,
                           create_compiled_model=(t3 - t2) / 1e6, create_buffers=(t4 - t3) / 1e6)
        in_names, out_names = list(signature["inputs"]), list(signature["outputs"])
        out_details = model.get_output_tensor_details(key)
        in_pos = positions(in_names, [s.name for s in input_specs], "inputs")
        out_pos = positions(out_names, [s.name for s in output_specs], "outputs")
        shapes = [[int(v) for v in out_details[n]["shape"]] for n in out_names]
        self.compiled = (model, index, ins, outs, in_pos, out_pos, shapes)

        def run(arrays):
            with self.lock:
                for k, a in zip(in_pos, arrays):
                    ins[k].write(a)
                model.run_by_index(index, ins, outs)
                return [outs[k].read(int(np.prod(shapes[k])), output_specs[j].dtype).reshape(shapes[k]) for j, k in enumerate(out_pos)]

        self.run = run


class AppOrt:
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

    def options(self, optimise: bool):
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        if not optimise:  # the graph was optimised when the cached form was made
            options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return options

    def provider_args(self) -> list:
        out = []
        for name in self.providers:
            if name == "TensorrtExecutionProvider" and self.engine_cache and os.path.isdir(self.engine_cache):
                out.append((name, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": self.engine_cache, "trt_timing_cache_enable": "True"}))
            else:
                out.append(name)
        return out

    def session(self, path: str, options, input_specs, output_specs) -> None:
        t0 = time.perf_counter_ns()
        try:
            session = self.ort.InferenceSession(path, sess_options=options, providers=self.provider_args())
        except Exception:
            if self.cpu_only:
                raise
            session = self.ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
            self.notes.append("providers %s could not start; runs on CPUExecutionProvider" % ", ".join(self.providers))
            self.providers = ["CPUExecutionProvider"]
        self.phases["create_session"] = (time.perf_counter_ns() - t0) / 1e6
        in_names = [i.name for i in session.get_inputs()]
        out_names = [o.name for o in session.get_outputs()]
        ins = [in_names[k] for k in positions(in_names, [s.name for s in input_specs], "inputs")]
        outs = [out_names[k] for k in positions(out_names, [s.name for s in output_specs], "outputs")]
        self.ort_session = session
        self.run = lambda arrays: session.run(outs, dict(zip(ins, arrays)))

    def load_plain(self, input_specs, output_specs) -> None:
        self.session(self.model_path, self.options(True), input_specs, output_specs)

    def load_cached(self, entry: str, meta: dict, input_specs, output_specs) -> None:
        options = self.options(False)
        if meta["form"] == "ort-format":
            options.add_session_config_entry("session.load_model_format", "ORT")
        self.session(os.path.join(entry, meta["model"]), options, input_specs, output_specs)
