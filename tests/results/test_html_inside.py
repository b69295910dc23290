"""The HTML report draws the time per operator and the latency over time under sustained load, with temperature."""

from __future__ import annotations

import json

from edgepack.agent.protocol import READABLE_PROTOCOLS, parse_report
from edgepack.results.html import render_html
from edgepack.results.store import open_store
from tests.results.conftest import agent_report, manifest

OPERATORS = {
    "source": "onnxruntime-profiler", "runs": 20, "total_ms": 1.0,
    "nodes": [{"name": "conv0", "op_type": "Conv", "provider": "CPUExecutionProvider", "ms": 0.8, "share": 0.8},
              {"name": "gemm0", "op_type": "Gemm", "provider": "CPUExecutionProvider", "ms": 0.2, "share": 0.2}],
    "by_op_type": [{"op_type": "Conv", "count": 1, "ms": 0.8, "share": 0.8}, {"op_type": "Gemm", "count": 1, "ms": 0.2, "share": 0.2}],
    "by_provider": {"CPUExecutionProvider": {"nodes": 2, "ms": 1.0}},
}
SUSTAINED = {
    "duration_s": 30.0, "interval_s": 10.0, "slowdown": True, "slowdown_ratio": 1.4, "method": "test",
    "intervals": [{"t_s": 10.0, "runs": 100, "p50_ms": 1.0, "p90_ms": 1.2, "temp_c": 50.0},
                  {"t_s": 20.0, "runs": 90, "p50_ms": 1.2, "p90_ms": 1.5, "temp_c": 62.0},
                  {"t_s": 30.0, "runs": 80, "p50_ms": 1.4, "p90_ms": 1.8, "temp_c": 71.5}],
}


def stored(tmp_path, **fields):
    doc = dict(agent_report([1.0] * 10).model_dump(mode="json"), protocol=max(READABLE_PROTOCOLS), **fields)
    with open_store(tmp_path / "h.sqlite3") as store:
        store.add(device="pi4", manifest=manifest(), report=parse_report(json.dumps(doc)), bundle_sha="1" * 64, bundle_path="/b",
                  budget_failures=None, seconds={}, trial=None)
        return store.runs()


def test_the_report_plots_time_per_op_type_and_latency_with_temperature_over_time(tmp_path):
    page = render_html(stored(tmp_path, operators=OPERATORS, sustained=SUSTAINED))
    assert 'data-plot="operators"' in page and "Conv x1" in page and "Gemm x1" in page
    assert 'data-plot="sustained"' in page and 'class="temperature"' in page and "71.5 °C" in page
    assert "slowdown: last p50 1.40x the first" in page


def test_runs_without_those_figures_draw_neither_plot(tmp_path):
    page = render_html(stored(tmp_path))
    assert 'data-plot="operators"' not in page and 'data-plot="sustained"' not in page
