"""The target profile: what a device is, and what a build for it must produce.

Every model forbids unknown keys. Closed sets are enums. Rules that involve more than one
field live in named validators whose messages say how to fix the profile.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgepack.limits import BENCH_LIMITS


class Conflict(ValueError):
    """A cross-field rule is broken; ``at`` is the dotted key the user should look at."""

    def __init__(self, message: str, at: str):
        super().__init__(message)
        self.at = tuple(at.split("."))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False, validate_default=True)


class Family(str, Enum):
    phone = "phone"
    raspberry_pi = "raspberry-pi"
    jetson = "jetson"
    microcontroller = "microcontroller"


class Format(str, Enum):
    tflite = "tflite"
    onnx = "onnx"
    tflite_micro = "tflite-micro"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    dynamic_int8 = "dynamic-int8"
    int8 = "int8"


class IoDtype(str, Enum):
    float32 = "float32"
    float16 = "float16"  # ONNX fp16 builds only
    int8 = "int8"
    uint8 = "uint8"


class CalibrationMethod(str, Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class QuantType(str, Enum):
    auto = "auto"  # activations: uint8 for CPU providers, symmetric int8 for TensorRT / CUDA
    int8 = "int8"
    uint8 = "uint8"


class Engine(str, Enum):
    tflite = "tflite"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"
    tflite_micro = "tflite-micro"


class LoadCache(str, Enum):
    auto = "auto"  # bench makes and measures the runtime's load-optimised form on the device; the loader uses it where it wins
    off = "off"  # plain loads only


class Fallback(str, Enum):
    auto = "auto"  # layer fallback, then up the precision ladder
    off = "off"


class PruneSchedule(str, Enum):
    gradual = "gradual"  # sparsity ramps up (cubic, as in Zhu & Gupta 2017) while the model trains
    one_shot = "one-shot"  # all of it at once, then fine-tuning


class OutputKind(str, Enum):
    classes = "classes"  # class scores: top-1 agreement, and accuracy where labels are given
    dense = "dense"  # maps, boxes, embeddings, regressions: SQNR and cosine similarity


# The one table of what each runtime accepts: the format it loads and the precisions it runs.
# Every profile is checked against it when it is loaded, so the planner can rely on it.
ENGINE_SUPPORT: dict[Engine, tuple[Format, frozenset[Precision]]] = {
    Engine.tflite: (Format.tflite, frozenset(Precision)),
    Engine.onnxruntime: (Format.onnx, frozenset(Precision)),
    # TensorRT builds engines from fp32, fp16 or QDQ int8 graphs; it has no dynamic-range int8.
    Engine.tensorrt: (Format.onnx, frozenset({Precision.fp32, Precision.fp16, Precision.int8})),
    # TFLite Micro runs full-integer models only: no fp16, no dynamic-range, no sparse tensors.
    Engine.tflite_micro: (Format.tflite_micro, frozenset({Precision.int8})),
}


class Hardware(Strict):
    arch: str = Field(description="CPU architecture as `uname -m` prints it, e.g. aarch64, x86_64, armv7e-m")
    cpu: str = Field(description="CPU core, e.g. cortex-a76")
    cores: int = Field(ge=1)
    clock_mhz: Optional[int] = Field(default=None, ge=1)
    ram_mb: Optional[int] = Field(default=None, ge=1, description="RAM of an application processor")
    gpu: Optional[str] = None
    flash_kb: Optional[int] = Field(default=None, ge=1, description="Flash of a microcontroller")
    ram_kb: Optional[int] = Field(default=None, ge=1, description="SRAM of a microcontroller")


class Prune(Strict):

    sparsity: float = Field(default=0.0, ge=0.0, lt=1.0, description="fraction of weights zeroed per layer")
    channels: float = Field(default=0.0, ge=0.0, lt=1.0, description="fraction of filters/units removed")
    fine_tune_epochs: int = Field(default=30, ge=0, le=1000, description="most epochs of fine-tuning; early stopping ends it sooner")
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    batch_size: int = Field(default=32, ge=1, le=65536)
    schedule: PruneSchedule = Field(default="gradual", description="gradual: sparsity ramps up over the first 60% of the epochs (at most 10)")
    patience: int = Field(default=3, ge=1, le=100, description="early stopping: epochs without a better held-out loss")
    min_sparsity: Optional[float] = Field(
        default=None, ge=0.0, lt=1.0, description="when pruning loses too much, try less sparsity, 10 points at a time, down to this"
    )

    @model_validator(mode="after")
    def min_sparsity_below_sparsity(self) -> "Prune":
        if self.min_sparsity is not None and self.min_sparsity > self.sparsity:
            raise Conflict(f"build.prune.min_sparsity {self.min_sparsity:g} is above sparsity {self.sparsity:g}: set it lower", at="min_sparsity")
        return self


class OnnxBuild(Strict):
    """ONNX-only settings: the opset a Keras/SavedModel export targets, and the int8 (QDQ) recipe."""

    # 17: loaded by TensorRT 8.5+ (JetPack 5) and onnxruntime 1.13+; 13 is the floor for per-channel QDQ.
    opset: int = Field(default=17, ge=13, le=23, description="opset of a Keras/SavedModel -> ONNX export")
    calibration_method: CalibrationMethod = CalibrationMethod.minmax
    activation_type: QuantType = Field(default=QuantType.auto, description="auto: uint8 on CPU, symmetric int8 for TensorRT/CUDA")
    weight_type: QuantType = Field(default=QuantType.int8, description="int8 (symmetric) or uint8")
    per_channel: bool = Field(default=True, description="one scale per output channel of each weight")
    reduce_range: bool = Field(default=False, description="7-bit weights, for x86 CPUs without VNNI")

    @model_validator(mode="after")
    def weights_are_concrete(self) -> "OnnxBuild":
        if self.weight_type is QuantType.auto:
            raise Conflict("build.onnx.weight_type must be int8 or uint8 (auto applies to activations)", at="weight_type")
        return self


class Build(Strict):
    format: Format
    precision: Precision
    io_dtype: IoDtype = IoDtype.float32
    prune: Prune = Prune()
    calibration_samples: int = Field(default=200, ge=1)
    # auto, off, or the precisions recovery may climb to (the precision ladder): [fp16, fp32]
    fallback: Union[Fallback, list[Precision]] = Fallback.auto
    onnx: OnnxBuild = OnnxBuild()

    @model_validator(mode="after")
    def onnx_settings_need_onnx(self) -> "Build":
        if "onnx" in self.model_fields_set and self.format is not Format.onnx:
            raise Conflict(f"build.onnx applies to format onnx (got {self.format.value}): remove the build.onnx section", at="onnx")
        return self

    @model_validator(mode="after")
    def integer_io_needs_int8(self) -> "Build":
        if self.io_dtype is IoDtype.float16:
            if self.format is not Format.onnx or self.precision is not Precision.fp16:
                raise Conflict(
                    f"io_dtype float16 is for ONNX fp16 builds (got format {self.format.value}, precision "
                    f"{self.precision.value}): set build.io_dtype: float32",
                    at="io_dtype",
                )
            return self
        # tflite-micro gets the more telling reason from micro_is_full_integer below.
        if self.io_dtype is not IoDtype.float32 and self.precision is not Precision.int8 and self.format is not Format.tflite_micro:
            raise Conflict(
                f"io_dtype {self.io_dtype.value} needs precision int8 (got {self.precision.value}): "
                "set build.io_dtype: float32, or build.precision: int8",
                at="io_dtype",
            )
        return self

    @model_validator(mode="after")
    def micro_is_full_integer(self) -> "Build":
        if self.format is Format.tflite_micro:
            if self.precision is not Precision.int8:
                raise Conflict(
                    f"format tflite-micro runs full-integer models only (got precision {self.precision.value}): "
                    "set build.precision: int8",
                    at="precision",
                )
            if self.io_dtype is IoDtype.float32:
                raise Conflict("format tflite-micro needs integer input and output: set build.io_dtype: int8", at="io_dtype")
            if self.prune.sparsity > 0:
                raise Conflict(
                    "format tflite-micro cannot run sparse models: set build.prune.sparsity: 0 "
                    "(build.prune.channels shrinks the model instead)",
                    at="prune.sparsity",
                )
        return self


class Runtime(Strict):
    engine: Engine
    threads: Optional[int] = Field(default=None, ge=1, description="interpreter threads; default: all cores")
    delegates: list[str] = Field(default_factory=list, description="TFLite delegates, e.g. xnnpack, gpu")
    providers: list[str] = Field(default_factory=list, description="ONNX Runtime execution providers, in order")
    load_cache: LoadCache = Field(
        default=LoadCache.auto,
        description="auto: bench makes the runtime's load-optimised form on the device (ONNX Runtime's optimised graph, "
        "LiteRT's XNNPACK weight cache), measures it beside the plain load, and the bundle's loader uses it where it wins; off: plain only",
    )


# Default budget for a dense output, measured on the encoder-decoder in tests/hard_models.py (a
# sigmoid map with a BatchNormalization and a Conv2DTranspose; figures from one run):
#   healthy: TFLite int8 38.7 dB / cosine 1.0000, fp16 66 dB; ONNX int8 with per-tensor weights
#            27.7 dB / 0.9995
#   broken:  fp16 with weights beyond fp16's range -0.0 dB / 0.568 (a flat map); ONNX int8 with
#            per-channel weights 14.3 dB / 0.989, max error 74% of the range (onnxruntime 1.32
#            quantizes ConvTranspose weights per channel on the wrong axis)
# 20 dB (noise a tenth of the output's spread) and 0.99 pass every healthy build and fail every
# broken one, with room on both sides.
DEFAULT_MIN_SQNR_DB = 20.0
DEFAULT_MIN_COSINE = 0.99


class Verify(Strict):
    """How the artifact's answers are judged against the original's, beyond the accuracy budget."""

    outputs: dict[str, OutputKind] = Field(
        default_factory=dict, description="output name -> classes | dense, where the kind inferred from its shape is wrong"
    )
    min_sqnr_db: float = Field(default=DEFAULT_MIN_SQNR_DB, description="dense outputs: least signal-to-noise ratio, dB")
    min_cosine: float = Field(default=DEFAULT_MIN_COSINE, ge=-1, le=1, description="dense outputs: least mean cosine similarity")
    metric: Optional[str] = Field(
        default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="a task metric, 'package.module:function' taking (reference outputs, artifact outputs, labels) -> float",
    )
    metric_min: Optional[float] = Field(default=None, description="the metric's least allowed value (higher is better)")
    metric_max: Optional[float] = Field(default=None, description="the metric's largest allowed value (lower is better)")

    @model_validator(mode="after")
    def metric_has_one_bound(self) -> "Verify":
        bounds = (self.metric_min is not None) + (self.metric_max is not None)
        if self.metric and bounds != 1:
            raise Conflict("verify.metric needs one bound: verify.metric_min (higher is better) or verify.metric_max (lower is better)", at="metric")
        if not self.metric and bounds:
            raise Conflict("verify.metric_min / metric_max need verify.metric: 'package.module:function'", at="metric")
        return self


class Budgets(Strict):
    max_model_kb: Optional[float] = Field(default=None, gt=0)
    max_peak_memory_mb: Optional[float] = Field(
        default=None, gt=0,
        description="peak memory of the process on the device: host RSS; on CUDA devices also the GPU memory the process holds "
        "(NVML), and on Jetson the unified memory it uses, each judged against this bound",
    )
    max_p90_latency_ms: Optional[float] = Field(default=None, gt=0)
    max_accuracy_drop: float = Field(default=0.01, ge=0, le=1)
    min_accelerated_fraction: Optional[float] = Field(
        default=None, gt=0, le=1,
        description="least fraction of the model's ops the accelerator (a TFLite delegate other than XNNPACK, an ONNX Runtime "
        "provider other than the CPU's) takes: estimated at build time, measured by bench",
    )


class Bench(Strict):
    warmup: int = Field(default=10, ge=0, le=BENCH_LIMITS["warmup"])
    runs: int = Field(default=100, ge=1, le=BENCH_LIMITS["runs"])
    min_seconds: float = Field(default=1.0, ge=0, le=BENCH_LIMITS["min_seconds"], allow_inf_nan=False)
    cold_loads: int = Field(default=3, ge=0, le=BENCH_LIMITS["cold_loads"])


class Micro(Strict):
    """What firmware needs beside the model, for the flash/RAM fit and the latency estimate."""

    runtime_code_kb: float = Field(gt=0, description="flash taken by the TFLite Micro runtime and its kernels")
    reserved_ram_kb: float = Field(ge=0, description="RAM the application needs besides the tensor arena")
    cycles_per_mac: float = Field(gt=0, description="assumed cycles per int8 multiply-accumulate")


class TuneSpace(Strict):
    """What `edgepack tune` may try, where the default search space (edgepack.tuning.space) is too wide: each key lists the values."""

    precision: Optional[list[Precision]] = None
    sparsity: Optional[list[float]] = Field(default=None, description="build.prune.sparsity values, each in [0, 1)")
    channels: Optional[list[float]] = Field(default=None, description="build.prune.channels values, each in [0, 1)")
    calibration_samples: Optional[list[int]] = None
    calibration_method: Optional[list[CalibrationMethod]] = None
    learning_rate: Optional[list[float]] = None
    batch_size: Optional[list[int]] = None
    fine_tune_epochs: Optional[list[int]] = Field(default=None, description="build.prune.fine_tune_epochs values (the most epochs)")
    fallback: Optional[list[Fallback]] = Field(default=None, description="build.fallback values: auto (recover) or off")
    # Runtime settings, measured by the bench of each trial beside the build's settings.
    threads: Optional[list[int]] = Field(default=None, description="runtime.threads values")
    delegates: Optional[list[list[str]]] = Field(default=None, description="runtime.delegates lists to try, e.g. [[xnnpack], [], [gpu, xnnpack]]")
    providers: Optional[list[list[str]]] = Field(
        default=None, description="runtime.providers lists to try, e.g. [[CUDAExecutionProvider, CPUExecutionProvider], [CPUExecutionProvider]]"
    )

    @model_validator(mode="after")
    def fractions_and_sizes_in_range(self) -> "TuneSpace":
        for key in ("sparsity", "channels"):
            if any(not 0 <= v < 1 for v in getattr(self, key) or []):
                raise Conflict(f"tune.{key} values are fractions in [0, 1)", at=key)
        for key, most in (("calibration_samples", None), ("batch_size", 65536), ("fine_tune_epochs", 1000), ("threads", None)):  # build.prune's limits
            if any(v < 1 or (most is not None and v > most) for v in getattr(self, key) or []):
                raise Conflict(f"tune.{key} values are at least 1" + (f" and at most {most}" if most else ""), at=key)
        if any(not 0 < v <= 1 for v in self.learning_rate or []):
            raise Conflict("tune.learning_rate values are in (0, 1]", at="learning_rate")
        return self


class Profile(Strict):
    name: str
    extends: Optional[str] = None
    family: Family
    description: str = ""
    hardware: Hardware
    build: Build
    runtime: Runtime
    budgets: Budgets = Budgets()
    bench: Bench = Bench()
    verify: Verify = Verify()
    tune: TuneSpace = TuneSpace()
    micro: Optional[Micro] = None

    @model_validator(mode="after")
    def runtime_runs_the_build(self) -> "Profile":
        fmt, precisions = ENGINE_SUPPORT[self.runtime.engine]
        engine = self.runtime.engine.value
        if self.build.format is not fmt:
            raise Conflict(
                f"runtime.engine {engine} loads {fmt.value} models, but build.format is "
                f"{self.build.format.value}: set build.format: {fmt.value} or pick another engine",
                at="build.format",
            )
        if self.build.precision not in precisions:
            allowed = ", ".join(p.value for p in Precision if p in precisions)
            raise Conflict(
                f"runtime.engine {engine} cannot run precision {self.build.precision.value}: "
                f"set build.precision to one of {allowed}",
                at="build.precision",
            )
        return self

    @model_validator(mode="after")
    def tensorrt_takes_symmetric_int8(self) -> "Profile":
        # TensorRT's explicit (QDQ) quantization accepts int8 with zero point 0 only.
        if self.runtime.engine is Engine.tensorrt and self.build.precision is Precision.int8:
            if self.build.onnx.activation_type is QuantType.uint8 or self.build.onnx.weight_type is QuantType.uint8:
                raise Conflict(
                    "runtime.engine tensorrt runs symmetric int8 only: set build.onnx.activation_type: auto (or int8) "
                    "and build.onnx.weight_type: int8",
                    at="build.onnx.activation_type",
                )
            if self.build.io_dtype is IoDtype.uint8:
                raise Conflict("runtime.engine tensorrt runs symmetric int8 only: set build.io_dtype: int8 or float32", at="build.io_dtype")
        return self

    @model_validator(mode="after")
    def microcontroller_has_micro(self) -> "Profile":
        if self.build.format is Format.tflite_micro:
            if self.micro is None:
                raise Conflict(
                    "a tflite-micro profile needs a `micro:` section (runtime_code_kb, reserved_ram_kb, cycles_per_mac)",
                    at="build.format",
                )
            if self.hardware.flash_kb is None or self.hardware.ram_kb is None:
                raise Conflict("a tflite-micro profile needs hardware.flash_kb and hardware.ram_kb", at="hardware")
        return self
