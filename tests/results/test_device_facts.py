"""What the device reports of its inside, judged on the host: the accelerated fraction, the device's gate,
GPU memory against the budget, and precision advice from the device's history."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepack.agent.protocol import READABLE_PROTOCOLS, parse_report
from edgepack.cli.bench_inside import parse_duration
from edgepack.results.device_facts import inside_failures, precision_advice, top_operators
from edgepack.errors import DeviceError
from edgepack.profile.schema import Budgets, Runtime
from edgepack.results.store import open_store
from tests.results.conftest import agent_report, manifest


def with_fields(report, **fields):
    doc = report.model_dump(mode="json")
    doc.update(fields)
    doc["protocol"] = max(READABLE_PROTOCOLS)
    return parse_report(json.dumps(doc))


OPERATORS = {
    "source": "onnxruntime-profiler", "runs": 20, "total_ms": 1.0,
    "nodes": [
        {"name": "conv0", "op_type": "Conv", "provider": "CUDAExecutionProvider", "ms": 0.7, "share": 0.7},
        {"name": "conv1", "op_type": "Conv", "provider": "CUDAExecutionProvider", "ms": 0.2, "share": 0.2},
        {"name": "shape0", "op_type": "Shape", "provider": "CPUExecutionProvider", "ms": 0.1, "share": 0.1},
    ],
    "by_op_type": [{"op_type": "Conv", "count": 2, "ms": 0.9, "share": 0.9}, {"op_type": "Shape", "count": 1, "ms": 0.1, "share": 0.1}],
    "by_provider": {"CUDAExecutionProvider": {"nodes": 2, "ms": 0.9}, "CPUExecutionProvider": {"nodes": 1, "ms": 0.1}},
    "accelerated_fraction": 2 / 3,
}


def budgeted(**budgets):
    m = manifest()
    return m.model_copy(update={"profile": m.profile.model_copy(update={"budgets": Budgets(**budgets)})})


def test_a_bench_under_the_accelerated_fraction_fails_naming_the_ops_left_on_the_cpu():
    report = with_fields(agent_report([1.0] * 10), operators=OPERATORS)
    failures = inside_failures(report, budgeted(min_accelerated_fraction=0.9))
    assert len(failures) == 1 and "67%" in failures[0] and "Shape" in failures[0]
    assert inside_failures(report, budgeted(min_accelerated_fraction=0.5)) == []
    assert top_operators(report, 1) == [("Conv", 0.9, 0.9, 2)]


def test_a_version_1_report_still_reads_and_an_unknown_version_is_refused():
    doc = agent_report([1.0] * 10).model_dump(mode="json")
    assert parse_report(json.dumps(dict(doc, protocol=1))).operators is None
    with pytest.raises(DeviceError, match="protocol"):
        parse_report(json.dumps(dict(doc, protocol=99)))


def test_the_devices_gate_failure_fails_the_bench():
    check = {"n_samples": 8, "top1_agreement": 1.0, "passed": False, "failures": ["map differs: SQNR 12.0 dB (budget 20)"],
             "outputs": [{"name": "map", "kind": "dense", "sqnr_db": 12.0, "cosine": 0.95, "passed": False}]}
    report = with_fields(agent_report([1.0] * 10), check=check)
    assert inside_failures(report, budgeted()) == ["on the device: map differs: SQNR 12.0 dB (budget 20)"]


def test_gpu_memory_is_judged_against_the_peak_memory_budget_and_says_what_it_bounds():
    report = agent_report([1.0] * 10)
    memory = dict(report.memory.model_dump(mode="json"), gpu={"process_mb": 300.0, "source": "nvml", "unified": False, "method": "NVML"})
    failures = inside_failures(with_fields(report, memory=memory), budgeted(max_peak_memory_mb=256))
    assert failures == ["GPU memory of the process 300.0 MB (nvml) is over the budget of 256 MB"]


def test_a_profile_asking_for_a_gpu_that_ran_on_the_cpu_fails_the_accelerated_budget():
    m = budgeted(min_accelerated_fraction=0.5)
    m = m.model_copy(update={"profile": m.profile.model_copy(update={"runtime": Runtime(engine="tflite", delegates=["gpu", "xnnpack"])})})
    failures = inside_failures(agent_report([1.0] * 10), m)  # the report's runtime ran xnnpack only
    assert len(failures) == 1 and "no accelerator ran the model" in failures[0]


def test_advice_names_the_faster_precision_of_the_same_model_on_the_same_device(tmp_path):
    with open_store(tmp_path / "h.sqlite3") as store:
        fp16 = manifest(target="jetson-fp16", precision="fp16")
        store.add(device="orin", manifest=fp16, report=agent_report(np.full(50, 0.9)), bundle_sha="1" * 64, bundle_path="/b/fp16",
                  budget_failures=None, seconds={}, trial=None)
        store.add(device="other", manifest=manifest(target="x", precision="fp32"), report=agent_report(np.full(50, 0.1)),
                  bundle_sha="2" * 64, bundle_path="/b/x", budget_failures=None, seconds={}, trial=None)
        history = store.runs(device="orin")
    slow = agent_report(np.full(50, 2.6))
    advice = precision_advice(slow, manifest(precision="int8"), history)
    assert len(advice) == 1 and "fp16" in advice[0] and "2.600" in advice[0] and "0.900" in advice[0]
    assert precision_advice(agent_report(np.full(50, 0.85)), manifest(precision="int8"), history) == []


@pytest.mark.parametrize("text, seconds", [("10m", 600.0), ("90s", 90.0), ("1.5h", 5400.0), ("30", 30.0), ("500ms", 0.5)])
def test_sustained_durations_read_with_their_units(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "0s", "25h", "-1m"])
def test_a_bad_sustained_duration_is_refused(text):
    import typer

    with pytest.raises(typer.BadParameter):
        parse_duration(text)
