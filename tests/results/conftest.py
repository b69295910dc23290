"""Hand-made runs for the results tests: agent reports validated by the real protocol, and manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgepack.agent.protocol import AgentReport, parse_report
from edgepack.bundle import FileEntry, Fidelity, Manifest, SourceInfo
from edgepack.profile.schema import Bench, Budgets
from edgepack.profile.store import load_target


def agent_report(latencies, cold=(12.0, 13.0, 12.5), warm=(3.0, 3.2, 3.1), peak_mb=60.0, baseline_mb=50.0) -> AgentReport:
    """An ok agent report with these latency samples (ms), load samples and memory, through `parse_report`."""
    x = np.asarray(latencies, dtype=float)
    doc = {
        "protocol": 1,
        "ok": True,
        "system": {"arch": "aarch64", "cpu_model": "Cortex-A72", "cores": 4, "memory_total_mb": 3800.0, "os": "Linux", "python": "3.11.2"},
        "runtime": {"name": "tflite_runtime", "version": "2.14.0", "delegates": ["xnnpack"], "threads": 4},
        "load": {"cold_ms": list(cold), "warm_ms": list(warm), "in_process_ms": 2.0, "cold_evicted": True, "method": "test"},
        "first_inference_ms": 1.5,
        "latency_ms": {
            "samples": x.tolist(),
            "p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)), "p99": float(np.percentile(x, 99)),
            "mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max()),
            "warmup": 5, "runs": len(x), "method": "test",
        },
        "throughput_per_s": 1000.0 / float(np.median(x)),
        "memory": {"baseline_rss_mb": baseline_mb, "peak_rss_mb": peak_mb, "delta_mb": peak_mb - baseline_mb, "method": "test"},
        "check": {"n_samples": 8, "max_abs_error": 0.01, "mean_abs_error": 0.001, "top1_agreement": 1.0},
    }
    return parse_report(json.dumps(doc))


def manifest(target: str = "pi-int8", precision: str = "int8", model_bytes: int = 46_000, accuracy: float = 0.947) -> Manifest:
    """A bundle manifest as `edgepack build` writes it, with an artifact of MODEL_BYTES."""
    return Manifest(
        created="2026-01-01T00:00:00+00:00",
        status="ok",
        target=target,
        artifact="model.tflite",
        format="tflite",
        precision=precision,
        source=SourceInfo(path="cnn.keras", kind="keras", sha256="ab" * 32, params=1234),
        profile=load_target("raspberry-pi-4").model_copy(update={"budgets": Budgets(max_p90_latency_ms=50, max_peak_memory_mb=256), "bench": Bench(runs=100)}),
        build={"precision": precision},
        inputs=[],
        outputs=[],
        fidelity=Fidelity(n_samples=397, max_abs_error=0.05, mean_abs_error=0.001, top1_agreement=0.99, accuracy_original=0.95, accuracy_artifact=accuracy),
        tools={"tensorflow": "2.21.0"},
        files=[FileEntry(path="model.tflite", bytes=model_bytes, sha256=f"{model_bytes:064x}")],
    )


def add_run(store, latencies=None, device="pi4", target="pi-int8", model_bytes=46_000, peak_mb=60.0, failures=None, seed=0, trial=None, **kw) -> int:
    """Store one hand-made run and return its id."""
    if latencies is None:
        latencies = np.random.default_rng(seed).lognormal(np.log(2.0), 0.05, 200)
    m = manifest(target=target, model_bytes=model_bytes)
    return store.add(
        device=device, manifest=m, report=agent_report(latencies, peak_mb=peak_mb, **kw),
        bundle_sha=f"{model_bytes:064x}", bundle_path=f"/bundles/{target}", budget_failures=failures,
        seconds={"connect": 0.1, "push": 0.2, "run": 3.0, "total": 3.3}, trial=trial,
    )


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "history.sqlite3"
