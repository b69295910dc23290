"""What the results history holds of one run: `RunRecord`, and the manifest summary stored with it.

`edgepack.results.store` reads and writes them; comparisons, reports and the gate read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from edgepack._version import __version__

if TYPE_CHECKING:
    from edgepack.agent.protocol import AgentReport
    from edgepack.bundle import Manifest


@dataclass
class RunRecord:
    """One stored run: what was measured where, and the agent's whole report."""

    id: int
    created: str
    device: str
    target: str
    format: str
    precision: str
    bundle_sha256: str
    bundle_path: str
    manifest: dict[str, Any]
    report: AgentReport
    passed: bool
    budget_failures: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    edgepack_version: str = __version__
    trial: Optional[dict[str, Any]] = None  # {"study", "number"}: the `edgepack tune` trial this run measured

    @property
    def label(self) -> str:
        """The run's id as it is shown and typed: ``#12``."""
        return f"#{self.id}"

    @property
    def model_bytes(self) -> Optional[int]:
        return self.manifest.get("artifact_bytes")

    @property
    def accuracy(self) -> Optional[float]:
        return (self.manifest.get("fidelity") or {}).get("accuracy_artifact")

    @property
    def latency_samples(self) -> list[float]:
        return list(self.report.latency_ms.samples) if self.report.latency_ms else []

    @property
    def p50_ms(self) -> Optional[float]:
        return self.report.latency_ms.p50 if self.report.latency_ms else None

    @property
    def p90_ms(self) -> Optional[float]:
        return self.report.latency_ms.p90 if self.report.latency_ms else None

    @property
    def peak_mb(self) -> Optional[float]:
        return self.report.memory.peak_rss_mb if self.report.memory else None

    def summary(self) -> dict[str, Any]:
        """Return the run's headline figures as plain JSON-ready values (no raw samples)."""
        import statistics

        r = self.report
        load = r.load
        return {
            "id": self.id,
            "created": self.created,
            "device": self.device,
            "target": self.target,
            "format": self.format,
            "precision": self.precision,
            "bundle_sha256": self.bundle_sha256,
            "bundle_path": self.bundle_path,
            "model_bytes": self.model_bytes,
            "accuracy": self.accuracy,
            "runtime": f"{r.runtime.name} {r.runtime.version or ''}".strip() if r.runtime else None,
            "load_cold_ms": statistics.median(load.cold_ms) if load and load.cold_ms else None,
            "load_warm_ms": statistics.median(load.warm_ms) if load and load.warm_ms else None,
            "first_inference_ms": r.first_inference_ms,
            "latency_p50_ms": self.p50_ms,
            "latency_p90_ms": self.p90_ms,
            "latency_p99_ms": r.latency_ms.p99 if r.latency_ms else None,
            "latency_runs": len(self.latency_samples),
            "throughput_per_s": r.throughput_per_s,
            "peak_memory_mb": self.peak_mb,
            "top1_vs_host": r.check.top1_agreement if r.check else None,
            "passed": self.passed,
            "budget_failures": self.budget_failures,
            "edgepack_version": self.edgepack_version,
        }


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """Return what the history keeps of a bundle's manifest: artifact, source, fidelity, settings."""
    artifact = next((f for f in manifest.files if f.path == manifest.artifact), None)
    return {
        "target": manifest.target,
        "format": manifest.format.value,
        "precision": manifest.precision.value,
        "status": manifest.status.value,
        "created": manifest.created,
        "edgepack_version": manifest.edgepack_version,
        "artifact": manifest.artifact,
        "artifact_bytes": artifact.bytes if artifact else None,
        "artifact_sha256": artifact.sha256 if artifact else None,
        "bundle_bytes": sum(f.bytes for f in manifest.files),
        "source": manifest.source.model_dump(mode="json"),
        "fidelity": manifest.fidelity.model_dump(mode="json"),
        "budgets": manifest.profile.budgets.model_dump(mode="json"),
        "bench": manifest.profile.bench.model_dump(mode="json"),
        "runtime": manifest.profile.runtime.model_dump(mode="json"),
        "hardware": manifest.profile.hardware.model_dump(mode="json"),
        "tools": manifest.tools,
    }
