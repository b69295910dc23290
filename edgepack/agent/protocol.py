"""The agent's report, as the host reads it: pydantic models and `parse_report`.

`edgepack_agent.py` (assembled from edgepack/ondevice/, run on the device, never importing the
host side) writes this document; keep the two in sync. Every model forbids unknown keys, so a drift between them fails loudly in
the test that validates a real agent report. Measurement fields are optional: a report with
``ok: false`` carries what was measured before the failure, and ``errors`` says why.
"""

from __future__ import annotations

import json
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgepack.errors import DeviceError

# 2 adds optional fields only (operators, sustained, memory.gpu, the check's gate): a version-1 report still reads.
PROTOCOL_VERSION = 2
READABLE_PROTOCOLS = (1, 2)

_AGENT_HINT = "run `python edgepack_agent.py BUNDLE_DIR` on the device by hand and read its stderr"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SystemInfo(Strict):
    arch: Optional[str] = None
    cpu_model: Optional[str] = None
    cores: Optional[int] = None
    cores_usable: Optional[int] = None  # CPU affinity: what a container or taskset leaves us
    memory_total_mb: Optional[float] = None
    os: Optional[str] = None
    python: Optional[str] = None


class RuntimeInfo(Strict):
    name: str  # ai_edge_litert, tflite_runtime, tensorflow.lite, onnxruntime
    version: Optional[str] = None
    delegates: list[str] = []  # TFLite delegates actually applied (xnnpack is the built-in default)
    providers: list[str] = []  # ONNX Runtime: session.get_providers()
    threads: Optional[int] = None  # num_threads / intra_op_num_threads passed to the runtime
    # ONNX Runtime: provider -> kernel (op type after graph optimisation) -> count, from its profiler
    nodes_by_provider: Optional[dict[str, dict[str, int]]] = None


class OutputCheck(Strict):
    """One output of the device's answers judged by the build's gate (its kind and thresholds)."""

    name: str
    kind: str  # classes | dense, as the build judged it
    sqnr_db: Optional[float] = None
    cosine: Optional[float] = None
    top1_agreement: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    passed: bool = True


class Check(Strict):
    n_samples: int = Field(ge=0)
    max_abs_error: Optional[float] = None
    mean_abs_error: Optional[float] = None
    top1_agreement: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    # The build's gate applied on the device (protocol 2): None where the report predates it.
    outputs: list[OutputCheck] = []
    passed: Optional[bool] = None
    failures: list[str] = []
    gate: Optional[str] = None  # the thresholds applied, in words


class OptimizedLoad(Strict):
    """The runtime's load-optimised form of the model, made once on the device and measured beside the plain load."""

    form: str  # onnx-optimized | ort-format | xnnpack-weight-cache
    cold_ms: list[float] = []
    warm_ms: list[float] = []
    cold_evicted: Optional[bool] = None
    phases_ms: Optional[dict[str, float]] = None
    import_ms: Optional[float] = None  # the runtime API this form needs (LiteRT's CompiledModel imports more)
    check: Optional[Check] = None  # its answers on the reference inputs
    path: Optional[str] = None  # the load-cache entry on the device
    created: Optional[bool] = None  # made by this bench (False: checked and reused)
    alternatives_warm_ms: Optional[dict[str, Optional[float]]] = None  # other forms tried, median warm load
    used_by_loader: Optional[bool] = None  # edgepack_runtime.py loads this form (its answers hold and it is faster)
    method: Optional[str] = None


class FirstAnswerRun(Strict):
    form: str  # plain, or the optimised form
    background: bool  # load(background=True) while the app's other start-up work runs
    ms: list[float] = []  # one fresh process each: import of the loader to the first predict's return


class FirstAnswer(Strict):
    """Time to first answer with the bundle's loader, as an app feels it."""

    startup_work_ms: float
    runs: list[FirstAnswerRun] = []
    method: Optional[str] = None


class LoadTimes(Strict):
    cold_ms: list[float] = []  # one fresh process each, model file evicted from the page cache
    warm_ms: list[float] = []  # one fresh process each, page cache left as it is
    in_process_ms: Optional[float] = None
    cold_evicted: Optional[bool] = None  # None when no cold load was asked for
    method: Optional[str] = None
    # Load detail: reports stored before it existed read with these as None.
    phases_ms: Optional[dict[str, float]] = None  # phase -> median ms over the warm loads, in order
    import_ms: Optional[float] = None  # the runtime's import, before the load
    optimized: Optional[OptimizedLoad] = None
    first_answer: Optional[FirstAnswer] = None


class LatencyStats(Strict):
    samples: list[float]
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    warmup: int = Field(ge=0)
    runs: int = Field(ge=1)
    method: Optional[str] = None

    @model_validator(mode="after")
    def percentiles_are_ordered(self) -> LatencyStats:
        if len(self.samples) != self.runs:
            raise ValueError(f"runs is {self.runs} but {len(self.samples)} samples were sent")
        if not (self.min <= self.p50 <= self.p90 <= self.p99 <= self.max):
            raise ValueError("latency statistics out of order: need min <= p50 <= p90 <= p99 <= max")
        return self


class GpuMemory(Strict):
    """The GPU memory of the measuring process (CUDA: NVML) or the unified memory (Jetson), and how it was read."""

    process_mb: Optional[float] = None  # None: not measured, `method` says why
    source: Optional[str] = None  # nvml | tegrastats | meminfo | None
    unified: Optional[bool] = None  # Jetson: CPU and GPU share the RAM
    system_used_mb: Optional[float] = None
    gpu_load_pct: Optional[float] = None
    devices: list[dict[str, float]] = []  # NVML: index, used_mb, total_mb per GPU
    method: str


class MemoryUse(Strict):
    baseline_rss_mb: Optional[float] = None
    peak_rss_mb: Optional[float] = None  # after load and inference (reports before load detail: after the check too)
    delta_mb: Optional[float] = None
    load_mb: Optional[float] = None  # the load's peak over the baseline
    inference_mb: Optional[float] = None  # the inference's peak over the RSS after the load
    check_peak_rss_mb: Optional[float] = None  # the reference check's own peak, apart from the model's
    peak_reset: Optional[bool] = None  # VmHWM reset with /proc/self/clear_refs before each step
    method: str
    gpu: Optional[GpuMemory] = None  # where the model runs on a GPU (protocol 2)


class TrtexecStats(Strict):
    """One line of trtexec's performance summary, in ms, as trtexec computed it."""

    min: Optional[float] = None
    max: Optional[float] = None
    mean: Optional[float] = None
    median: Optional[float] = None
    percentiles: dict[str, float] = {}  # "90" -> ms, for each --percentile trtexec printed


class TensorrtFigures(Strict):
    """What trtexec said about the engine it built and ran (``runtime.engine: tensorrt``)."""

    tensorrt_version: Optional[str] = None
    trtexec: Optional[str] = None  # the trtexec that ran
    device: Optional[str] = None
    precision: Optional[str] = None  # as trtexec printed it, e.g. FP32+FP16
    flags: list[str] = []  # --fp16 / --int8
    passed: Optional[bool] = None
    engine_path: Optional[str] = None
    engine_cached: Optional[bool] = None  # taken from the device's engine cache (no build this run)
    engine_build_s: Optional[float] = None  # None when cached
    engine_load_ms: Optional[float] = None  # "Engine deserialized in"
    throughput_qps: Optional[float] = None
    latency_ms: Optional[TrtexecStats] = None  # host latency: H2D + compute + D2H
    enqueue_ms: Optional[TrtexecStats] = None
    h2d_ms: Optional[TrtexecStats] = None
    gpu_compute_ms: Optional[TrtexecStats] = None
    d2h_ms: Optional[TrtexecStats] = None
    warmup_queries: Optional[int] = None
    queries: Optional[int] = None
    trace_s: Optional[float] = None
    host_walltime_s: Optional[float] = None
    gpu_compute_total_s: Optional[float] = None
    warnings: list[str] = []  # trtexec's own warnings about the measurement (unstable clocks, ...)


class NodeTime(Strict):
    name: str
    op_type: str
    provider: str  # the ONNX Runtime provider, or cpu / xnnpack / gpu for TFLite
    ms: float  # mean per run
    share: Optional[float] = None  # of the summed operator time


class OpTypeTime(Strict):
    op_type: str
    count: int
    ms: float
    share: Optional[float] = None


class ProviderShare(Strict):
    nodes: int
    ms: float


class OperatorProfile(Strict):
    """Time per operator on the device, and the nodes each provider or delegate ran."""

    source: Optional[str] = None  # onnxruntime-profiler | benchmark_model | None (none available)
    runs: Optional[int] = None
    total_ms: Optional[float] = None
    nodes: list[NodeTime] = []
    by_op_type: list[OpTypeTime] = []
    by_provider: dict[str, ProviderShare] = {}
    accelerated_fraction: Optional[float] = Field(default=None, ge=0.0, le=1.0)  # nodes off the CPU provider
    unavailable: Optional[str] = None  # why there are no per-operator times
    method: Optional[str] = None


class SustainedInterval(Strict):
    t_s: float
    runs: int
    p50_ms: float
    p90_ms: float
    temp_c: Optional[float] = None
    temps_c: dict[str, float] = {}
    freq_mhz: Optional[float] = None
    freq_min_mhz: Optional[float] = None


class Throttled(Strict):
    word: str
    conditions: list[str] = []


class Sustained(Strict):
    """`bench --sustained`: latency per interval under continuous load, beside temperature and frequency."""

    duration_s: float
    interval_s: float
    intervals: list[SustainedInterval]
    start: dict[str, object] = {}
    slowdown: bool
    slowdown_ratio: Optional[float] = None
    throttled_start: Optional[Throttled] = None
    throttled_end: Optional[Throttled] = None
    notes: list[str] = []
    method: str


class AgentReport(Strict):
    protocol: int
    ok: bool
    errors: list[str] = []
    notes: list[str] = []
    system: Optional[SystemInfo] = None
    runtime: Optional[RuntimeInfo] = None
    load: Optional[LoadTimes] = None
    first_inference_ms: Optional[float] = None
    latency_ms: Optional[LatencyStats] = None
    throughput_per_s: Optional[float] = None
    memory: Optional[MemoryUse] = None
    check: Optional[Check] = None
    tensorrt: Optional[TensorrtFigures] = None  # runtime.engine tensorrt, measured with trtexec
    operators: Optional[OperatorProfile] = None  # protocol 2: time per operator, nodes per provider
    sustained: Optional[Sustained] = None  # protocol 2: bench --sustained

    @model_validator(mode="after")
    def ok_matches_errors(self) -> AgentReport:
        if self.ok and self.errors:
            raise ValueError("ok is true but errors are listed")
        if not self.ok and not self.errors:
            raise ValueError("ok is false but no error says why")
        if self.ok and (self.runtime is None or self.load is None or self.latency_ms is None or self.memory is None):
            raise ValueError("ok is true but runtime, load, latency_ms or memory is missing")
        return self


def parse_report(text: str) -> AgentReport:
    """Parse the agent's stdout into a validated report.

    Args:
        text: everything the agent printed on stdout.

    Returns:
        The report; check ``ok`` and ``errors`` for a failed measurement.

    Raises:
        DeviceError: the text is not one JSON document, speaks another protocol version, or does
            not match the report schema.
    """
    if not text.strip():
        raise DeviceError("the agent printed nothing on stdout", hint=_AGENT_HINT)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeviceError(
            f"the agent's output is not one JSON document ({exc.msg} at line {exc.lineno}, column {exc.colno})",
            hint=_AGENT_HINT + "; stdout must carry the report and nothing else",
        ) from None
    if not isinstance(doc, dict):
        raise DeviceError(f"the agent's report is a JSON {type(doc).__name__}, not an object", hint=_AGENT_HINT)
    if doc.get("protocol") not in READABLE_PROTOCOLS:
        raise DeviceError(
            f"the agent speaks protocol {doc.get('protocol')!r}; this edgepack reads protocols "
            f"{', '.join(map(str, READABLE_PROTOCOLS))}",
            hint="push the agent that ships with this edgepack version",
        )
    try:
        return AgentReport.model_validate(doc)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or '(report)'}: {err['msg']}" for err in exc.errors()]
        raise DeviceError(
            f"the agent's report does not match protocol {PROTOCOL_VERSION}: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint="the agent and edgepack.agent.protocol disagree: push the agent from this edgepack version",
            details=problems,
        ) from None
