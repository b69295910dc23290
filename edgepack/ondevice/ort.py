"""ONNX Runtime with the requested execution providers, its load-optimised forms and its node placement."""

from __future__ import annotations

import json
import os
import time

from .agentbase import AgentFailure, FORM_FILES, ORT_DTYPES, Spec, first_line
from .opprofile import profile_ort_session, profiled_events


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
        def make_session(prefix):
            options = self._options()
            options.enable_profiling = True
            options.profile_file_prefix = prefix
            return self._session(model_path, options)

        placed = {}
        for event in profiled_events(make_session, bound, [s.key for s in out_specs], runs=1):
            fields = event.get("args") or {}
            if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time") and fields.get("provider"):
                kernels = placed.setdefault(fields["provider"], {})
                kernels[fields.get("op_name") or "?"] = kernels.get(fields.get("op_name") or "?", 0) + 1
        return placed

    def operator_profile(self, model_path: str, bound, out_specs) -> dict:
        """Time per node, op type and provider from ONNX Runtime's profiler, in a session of its own (see opprofile)."""
        def make_session(prefix):
            options = self._options()
            options.enable_profiling = True
            options.profile_file_prefix = prefix
            return self._session(model_path, options)

        return profile_ort_session(make_session, bound, [s.key for s in out_specs])

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
