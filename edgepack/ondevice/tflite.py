"""TFLite runtimes: the Interpreter (ai_edge_litert, tflite_runtime or tensorflow.lite) and LiteRT's CompiledModel."""

from __future__ import annotations

import time

from .agentbase import AgentFailure, Spec, first_line
from .common import DELEGATE_LIBRARIES, np
from .runtimes import import_tflite


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
        try:
            return import_tflite()
        except ImportError as exc:
            raise AgentFailure(str(exc))

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
