"""What a bench learnt about the inside of the device, judged and explained on the host.

The agent reports the nodes each provider ran, the build's gate applied to the device's answers,
the GPU memory, and sustained-load figures (edgepack.agent.protocol); this module turns them into
budget failures (`budgets.min_accelerated_fraction`, `budgets.max_peak_memory_mb` for the GPU, the
gate) and into advice from measurement: a precision that runs slower here than another precision of
the same model measured on the same device.
"""

from __future__ import annotations

from typing import Optional

from edgepack.agent.protocol import AgentReport
from edgepack.bundle import Manifest
from edgepack.profile.schema import Precision

SLOWER = 1.10  # another precision's p50 under this bench's by more than 10%: worth a word
LOWER_PRECISION = {Precision.int8: 0, Precision.dynamic_int8: 1, Precision.fp16: 2, Precision.fp32: 3}


def inside_failures(report: AgentReport, manifest: Manifest) -> list[str]:
    """The budgets and the gate the device's own figures missed (beside p90 latency and host RSS)."""
    budgets = manifest.profile.budgets
    failures = []
    ops = report.operators
    least = budgets.min_accelerated_fraction
    if least is not None and ops is not None and ops.accelerated_fraction is not None and ops.accelerated_fraction < least:
        on_cpu = ops.by_provider.get("CPUExecutionProvider")
        kinds = sorted({n.op_type for n in ops.nodes if n.provider == "CPUExecutionProvider"})
        failures.append(
            f"{100 * ops.accelerated_fraction:.0f}% of the nodes ran off the CPU, under budgets.min_accelerated_fraction "
            f"{100 * least:.0f}%: {on_cpu.nodes if on_cpu else 0} on CPUExecutionProvider ({', '.join(kinds[:8]) or '?'}"
            f"{', ...' if len(kinds) > 8 else ''})"
        )
    if least is not None and report.runtime is not None and not accelerated_at_all(report, manifest):
        failures.append(
            f"no accelerator ran the model (runtime: {', '.join(report.runtime.providers or report.runtime.delegates) or 'CPU'}), "
            f"under budgets.min_accelerated_fraction {100 * least:.0f}%"
        )
    check = report.check
    if check is not None and check.passed is False:
        failures += [f"on the device: {f}" for f in check.failures] or ["on the device the answers miss the build's gate"]
    gpu = report.memory.gpu if report.memory else None
    limit = budgets.max_peak_memory_mb
    if gpu is not None and gpu.process_mb is not None and limit is not None and gpu.process_mb > limit:
        what = "unified memory growth" if gpu.unified else "GPU memory of the process"
        failures.append(f"{what} {gpu.process_mb:.1f} MB ({gpu.source}) is over the budget of {limit:g} MB")
    return failures


def accelerated_at_all(report: AgentReport, manifest: Manifest) -> bool:
    """False where the profile asks for an accelerator and the runtime used none (no GPU delegate, only the CPU provider)."""
    runtime = manifest.profile.runtime
    asked = [p for p in runtime.providers if p != "CPUExecutionProvider"] + [d for d in runtime.delegates if d.lower() != "xnnpack"]
    if not asked or report.runtime is None:
        return True
    used = [p for p in report.runtime.providers if p != "CPUExecutionProvider"] + [d for d in report.runtime.delegates if d.lower() != "xnnpack"]
    return bool(used)


def precision_advice(report: AgentReport, manifest: Manifest, history: list) -> list[str]:
    """Say where another precision of the same model ran faster on this device than this bench's precision.

    Args:
        history: stored runs (edgepack.results.store.RunRecord) of this device, oldest first.
    """
    if report.latency_ms is None:
        return []
    here = report.latency_ms.p50
    source = manifest.source.sha256
    best: dict[str, tuple[float, str]] = {}
    for run in history:
        if run.precision == manifest.precision.value or run.p50_ms is None:
            continue
        if (run.manifest.get("source") or {}).get("sha256") != source or run.format != manifest.format.value:
            continue
        if run.precision not in best or run.p50_ms < best[run.precision][0]:
            best[run.precision] = (run.p50_ms, run.label)
    advice = []
    for precision, (p50, label) in sorted(best.items(), key=lambda kv: kv[1][0]):
        if here > SLOWER * p50:
            advice.append(
                f"{manifest.precision.value} runs slower here than {precision} of the same model on this device: "
                f"p50 {here:.3f} ms against {p50:.3f} ms (run {label}){why_slower(report, manifest)}"
            )
    if not advice and slow_qdq_suspected(report, manifest):
        advice.append(
            "int8 QDQ on the CUDA provider without TensorRT runs each quantized layer in float between DequantizeLinear and "
            "QuantizeLinear: bench the fp16 build of this model on this device to compare (no measurement of it in the history)"
        )
    return advice


def slow_qdq_suspected(report: AgentReport, manifest: Manifest) -> bool:
    providers = report.runtime.providers if report.runtime else []
    return manifest.precision is Precision.int8 and "CUDAExecutionProvider" in providers and "TensorrtExecutionProvider" not in providers


def why_slower(report: AgentReport, manifest: Manifest) -> str:
    if slow_qdq_suspected(report, manifest):
        return "; int8 QDQ on the CUDA provider without TensorRT runs each quantized layer in float between DequantizeLinear and QuantizeLinear"
    return ""


def top_operators(report: AgentReport, count: int = 5) -> list[tuple[str, float, Optional[float], int]]:
    """The op types that take the most time: (op type, ms per run, share, nodes)."""
    ops = report.operators
    if ops is None:
        return []
    return [(g.op_type, g.ms, g.share, g.count) for g in ops.by_op_type[:count]]
