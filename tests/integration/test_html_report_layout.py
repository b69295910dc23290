"""The HTML report as a reader sees it in headless Chromium: nothing clipped, plots legible.

The browser lays the page out; a checking script added to a copy of the report measures every
text of every plot against the picture's edges, the histograms' ink, how the tune plot's points
spread and how its chosen trial and study are named, and writes what it found into the page.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from edgepack.agent.protocol import OptimizedLoad
from edgepack.cli.app import app
from edgepack.results.store import open_store
from tests.integration.test_html_report import chromium, render
from tests.results.conftest import agent_report, manifest

pytestmark = pytest.mark.integration

CHECK = """
<script>
const plots = {};
for (const svg of document.querySelectorAll("svg.plot")) {
  const vb = svg.viewBox.baseVal;
  const clipped = [...svg.querySelectorAll("text")].filter(t => {
    const b = t.getBBox();
    return b.x < -0.5 || b.x + b.width > vb.width + 0.5;
  }).map(t => t.textContent);
  const bins = [...svg.querySelectorAll("rect.bin")];
  const trials = [...svg.querySelectorAll("circle.trial")].map(c => Number(c.getAttribute("cx")));
  const axis = [...svg.querySelectorAll(".axis line:not(.grid)")].map(l => [Number(l.getAttribute("x1")), Number(l.getAttribute("x2"))]);
  plots[svg.dataset.plot] = {
    clipped,
    bin_opacity: bins.map(b => Number(getComputedStyle(b).fillOpacity)),
    bin_height: Math.max(0, ...bins.map(b => b.getBBox().height)),
    trials, axis,
    chosen: [...svg.querySelectorAll("[data-chosen]")].map(c => c.dataset.trial),
    chosen_mark: svg.querySelectorAll(".chosen-mark").length,
    title: (svg.querySelector("text.title") || {}).textContent || "",
  };
}
const out = document.createElement("pre");
out.id = "render-check";
out.textContent = JSON.stringify({plots, captions: [...document.querySelectorAll("figcaption")].map(c => c.textContent)});
document.body.appendChild(out);
</script>
"""

STUDY = "0123456789ab-raspberry-pi-4-long-lab-name-local-89abcdef"  # as `tune` names a study


def add(history, latencies, target, device="raspberry-pi-4-lab-bench", model_bytes=46_000, failures=None, trial=None, optimized=True):
    report = agent_report(latencies)
    if optimized:
        load = report.load.model_copy(update={
            "phases_ms": {"read_file": 0.4, "build_interpreter": 1.2, "allocate_tensors": 0.9, "first_inference": 2.5},
            "optimized": OptimizedLoad(form="xnnpack-weight-cache", warm_ms=[2.0, 2.1], phases_ms={"read_file": 0.3, "build_interpreter": 0.6}),
        })
        report = report.model_copy(update={"load": load})
    return history.add(device=device, manifest=manifest(target=target, model_bytes=model_bytes), report=report,
                       bundle_sha=f"{model_bytes:064x}", bundle_path=f"/bundles/{target}", budget_failures=failures,
                       seconds={"total": 1.0}, trial=trial)


def test_the_report_keeps_every_label_inside_its_plot_and_marks_the_chosen_trial(tmp_path):
    browser = chromium()
    db = tmp_path / "h.sqlite3"
    rng = np.random.default_rng(0)
    with open_store(db) as history:
        add(history, np.concatenate([rng.lognormal(np.log(5.0), 0.05, 240), [400.0] * 15]), "raspberry-pi-4-fp32-with-a-long-name")
        add(history, rng.lognormal(np.log(2.0), 0.05, 250), "raspberry-pi-4-int8")
        # A study whose trials lie far from zero: 20-24 ms and 300-420 KB.
        for number, (ms, kb, failures) in enumerate([(21.0, 400, None), (22.0, 330, None), (20.0, 420, ["p90 over budget"]), (23.5, 300, None), (24.0, 410, None)]):
            add(history, np.full(60, ms), f"raspberry-pi-4-long-lab-name-trial-{number}", device="local", model_bytes=kb * 1024,
                failures=failures, trial={"study": STUDY, "number": number}, optimized=False)
    report = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--html", str(report)])
    assert result.exit_code == 0, result.output

    checked = tmp_path / "checked.html"
    checked.write_text(report.read_text().replace("</body>", CHECK + "</body>"))
    dom = render(browser, checked, tmp_path / "chromium-profile")
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    plots = check["plots"]

    assert {"latency", "load", "load-phases", "tune"} <= set(plots)
    for name, plot in plots.items():
        assert plot["clipped"] == [], name  # every label and figure lies inside the picture
    latency = plots["latency"]
    assert min(latency["bin_opacity"]) >= 0.5 and latency["bin_height"] >= 30  # histograms that can be seen
    tune = plots["tune"]
    x0, x1 = next((a, b) for a, b in tune["axis"] if b - a > 300)
    spread = (max(tune["trials"]) - min(tune["trials"])) / (x1 - x0)
    assert spread > 0.6  # the points spread over the plot, not crowded into its right quarter
    assert tune["chosen"] == ["0"] and tune["chosen_mark"] == 1  # fastest of those meeting every budget
    assert "raspberry-pi-4-long-lab-name" in tune["title"] and "0123456789ab" not in tune["title"]
    assert check["captions"] and not any("`" in c for c in check["captions"])
