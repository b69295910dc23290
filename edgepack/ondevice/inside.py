"""What the agent measures of the model's inside, after the timed runs: GPU memory, time per operator, sustained load.

Each step is read after the memory figures of the in-process load (a profiling session of its own
must not inflate them) and after GPU memory (which a second session would grow). A step that cannot
run says why in the report and never fails the measurement.
"""

from __future__ import annotations

from .agentbase import first_line
from .gpumemory import baseline_used_mb, gpu_memory, is_jetson
from .opprofile import profile_tflite
from .thermal import sustained_run


def unified_baseline(root: str = "/"):
    """On a Jetson, the unified-memory reading before the load (the GPU memory figure is the growth over it)."""
    return baseline_used_mb(root) if is_jetson(root) else None


def record_gpu_memory(report: dict, runtime, baseline, root: str = "/") -> None:
    """Add memory.gpu where the model ran on a GPU: NVML on CUDA devices, unified memory on a Jetson."""
    memory = report.get("memory")
    if memory is None:
        return
    info = runtime.info()
    try:
        found = gpu_memory(info.get("providers") or [], info.get("delegates") or [], baseline, root)
    except Exception as exc:  # a driver's error: the figure is missing, the bench goes on
        found = {"process_mb": None, "source": None, "method": "GPU memory could not be read: %s" % first_line(exc)}
    if found is not None:
        memory["gpu"] = found


def record_operators(args, report: dict, runtime, engine: str, model_path: str, bound, out_specs) -> None:
    """Add the per-operator profile: ONNX Runtime's profiler, TFLite's benchmark_model, or why there is none."""
    try:
        if hasattr(runtime, "operator_profile"):
            report["operators"] = runtime.operator_profile(model_path, bound, out_specs)
        elif engine == "tflite":
            report["operators"] = profile_tflite(model_path, args.threads, runtime.info().get("delegates") or [])
        else:
            report["operators"] = {"source": None, "unavailable": "no per-operator times for %s" % engine}
    except Exception as exc:
        report["operators"] = {"source": None, "unavailable": "the per-operator profile failed: %s" % first_line(exc)}


def record_sustained(args, report: dict, runtime, bound, out_specs) -> None:
    """`bench --sustained`: run continuously, per interval p50/p90 beside temperature, frequency and throttling."""
    if not getattr(args, "sustained", None):
        return
    interval = args.sustained_interval or max(1.0, args.sustained / 10.0)
    try:
        report["sustained"] = sustained_run(lambda: runtime.infer(bound, out_specs), args.sustained, interval, root=args.sysfs_root)
    except Exception as exc:  # the measurement already taken stands; the sustained run says why it has no figures
        report["sustained"] = {"duration_s": args.sustained, "interval_s": interval, "intervals": [], "slowdown": False, "method": "not measured",
                               "notes": ["the sustained run failed: %s" % first_line(exc)]}
