"""`edgepack report` (table, JSON, HTML file) and `edgepack compare` on a history of hand-made runs."""

from __future__ import annotations

import json
import re

import numpy as np
from typer.testing import CliRunner

from edgepack.cli.app import app
from edgepack.results.html import newest_per_target, render_html
from edgepack.results.store import open_store
from tests.results.conftest import add_run

runner = CliRunner()


def fill(db, n=3):
    with open_store(db) as history:
        ids = [add_run(history, seed=i, target=t, device=d, model_bytes=b)
               for i, (t, d, b) in enumerate([("pi-fp32", "pi4", 160_000), ("pi-int8", "pi4", 46_000), ("pi-int8", "orin", 46_000)][:n])]
    return ids


def test_report_lists_the_runs_in_a_table(db):
    ids = fill(db)
    result = runner.invoke(app, ["report", "--db", str(db)])
    assert result.exit_code == 0, result.output
    for run_id in ids:
        assert f"#{run_id}" in result.output
    assert "pi-fp32" in result.output and "orin" in result.output and "p90 ms" in result.output


def test_report_filters_by_target_device_and_last(db):
    ids = fill(db)
    data = json.loads(runner.invoke(app, ["report", "--db", str(db), "--json", "--target", "pi-int8"]).stdout)
    assert [d["id"] for d in data] == ids[1:]
    data = json.loads(runner.invoke(app, ["report", "--db", str(db), "--json", "--device", "pi4", "--last", "1"]).stdout)
    assert [d["id"] for d in data] == [ids[1]]
    row = data[0]
    assert row["model_bytes"] == 46_000 and row["latency_p90_ms"] > row["latency_p50_ms"] > 0
    assert row["runtime"] == "tflite_runtime 2.14.0" and row["load_cold_ms"] == 12.5 and "samples" not in json.dumps(row)


def test_report_without_a_history_says_how_to_make_one(tmp_path):
    db = tmp_path / "none.sqlite3"
    result = runner.invoke(app, ["report", "--db", str(db)])
    assert result.exit_code == 0 and "no runs in" in result.output and "edgepack bench BUNDLE" in result.output
    assert not db.exists()  # reading creates nothing
    assert json.loads(runner.invoke(app, ["report", "--db", str(db), "--json"]).stdout) == []


def test_report_html_writes_one_self_contained_file_with_every_plot(db, tmp_path):
    ids = fill(db)
    out = tmp_path / "report" / "runs.html"
    result = runner.invoke(app, ["report", "--db", str(db), "--html", str(out)])
    assert result.exit_code == 0 and f"wrote {out} (3 runs)" in result.output
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|\bhref=|url\(|@import|https?://", page)  # nothing to fetch
    for plot in ("latency", "load", "size", "p90", "accuracy", "memory"):
        assert f'data-plot="{plot}"' in page
    for run_id in ids:
        assert f'data-run="{run_id}"' in page


def test_html_plots_carry_the_figures(db):
    with open_store(db) as history:
        add_run(history, latencies=np.linspace(1.0, 2.0, 101), target="t", model_bytes=2048, peak_mb=80.0, baseline_mb=50.0)
        runs = history.runs()
    page = render_html(runs)
    latency = page[page.index('data-plot="latency"'):page.index("</svg>", page.index('data-plot="latency"'))]
    assert 'data-median="1.5"' in latency and 'class="median" data-value="1.5"' in latency
    assert sum(int(v) for v in re.findall(r'class="bin" data-value="(\d+)"', latency)) == 101  # every sample in a bin
    assert 'class="bar cold" data-value="12.5"' in page and page.count('class="sample cold"') == 3
    assert 'class="bar" data-value="2"' in page  # 2048 bytes = 2 KB
    assert 'class="bar peak" data-value="80"' in page and 'class="bar baseline" data-value="50"' in page


def test_html_escapes_names_and_has_a_page_for_no_runs(db):
    assert "No runs stored yet" in render_html([])
    with open_store(db) as history:
        add_run(history, target="<b>x&y</b>")
        page = render_html(history.runs())
    assert "<b>x" not in page and "&lt;b&gt;x&amp;y&lt;/b&gt;" in page


def test_newest_run_per_target_and_device(db):
    ids = fill(db)
    with open_store(db) as history:
        newer = add_run(history, seed=9, target="pi-fp32", device="pi4")
        runs = history.runs()
    assert [r.id for r in newest_per_target(runs)] == [newer, ids[1], ids[2]]


def test_compare_shows_both_runs_and_the_verdict(db):
    with open_store(db) as history:
        a = add_run(history, latencies=np.random.default_rng(1).lognormal(np.log(2.0), 0.05, 300))
        b = add_run(history, latencies=np.random.default_rng(2).lognormal(np.log(2.0), 0.05, 300))
        c = add_run(history, latencies=np.random.default_rng(3).lognormal(np.log(4.0), 0.05, 300), model_bytes=90_000)
    same = runner.invoke(app, ["compare", str(a), f"#{b}", "--db", str(db)])
    assert same.exit_code == 0, same.output
    assert f"A #{a}" in same.output and f"B #{b}" in same.output
    assert "verdict: no change in latency" in same.output
    slower = runner.invoke(app, ["compare", "last~2", "last", "--db", str(db)])
    assert "verdict: B is slower than A: median +" in slower.output
    assert "also: model size larger" in slower.output
    data = json.loads(runner.invoke(app, ["compare", str(c), str(a), "--db", str(db), "--json"]).stdout)
    assert data["latency_verdict"]["verdict"] == "faster" and data["a"]["id"] == c


def test_compare_of_unknown_runs_exits_2_with_a_hint(db, tmp_path):
    fill(db, 1)
    result = runner.invoke(app, ["compare", "1", "7", "--db", str(db)])
    assert result.exit_code == 2 and "no run #7" in result.output and "edgepack report" in result.output
    result = runner.invoke(app, ["compare", "1", "2", "--db", str(tmp_path / "missing.sqlite3")])
    assert result.exit_code == 2 and "no results history at" in result.output


def test_html_draws_each_runs_load_phases_as_a_stacked_bar(db):
    from edgepack.agent.protocol import OptimizedLoad
    from tests.results.conftest import agent_report, manifest

    report = agent_report(np.linspace(1.0, 2.0, 11))
    optimized = OptimizedLoad(form="xnnpack-weight-cache", cold_ms=[9.0], warm_ms=[5.0],
                              phases_ms={"create_compiled_model": 3.0, "create_buffers": 1.0, "first_inference": 2.0})
    load = report.load.model_copy(update={
        "phases_ms": {"read_file": 1.5, "build_interpreter": 0.5, "allocate_tensors": 6.0, "first_inference": 2.0},
        "optimized": optimized,
    })
    report = report.model_copy(update={"load": load})
    with open_store(db) as history:
        history.add(device="pi4", manifest=manifest(), report=report, bundle_sha="0" * 64, bundle_path="/b",
                    budget_failures=None, seconds={})
        add_run(history, target="old-run")  # a report from before load phases: no bar, no error
        page = render_html(history.runs())

    plot = page[page.index('data-plot="load-phases"'):page.index("</svg>", page.index('data-plot="load-phases"'))]
    assert plot.count('class="run"') == 1
    assert 'data-form="plain" data-total="10"' in plot and 'data-form="xnnpack-weight-cache" data-total="6"' in plot
    for phase, ms in (("read_file", "1.5"), ("allocate_tensors", "6"), ("create_compiled_model", "3")):
        assert f'data-phase="{phase}" data-value="{ms}"' in plot
    assert ">allocate tensors</text>" in plot  # the legend
    assert "Where load time goes" in page



def test_report_html_refuses_a_file_that_is_not_html(tmp_path):
    from typer.testing import CliRunner

    from edgepack.cli.app import app

    precious = tmp_path / "precious.keras"
    precious.write_bytes(b"weights")
    result = CliRunner().invoke(app, ["report", "--db", str(tmp_path / "h.sqlite3"), "--html", str(precious)])
    assert result.exit_code == 2 and "not an .html file" in result.output and "--html precious.html" in result.output
    assert precious.read_bytes() == b"weights"
