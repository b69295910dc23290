"""The HTML report rendered by a real browser: headless Chromium lays it out and the plots are there.

Chromium loads the file offline (no network: the report must need none). A small checking script,
added by the test to a copy of the report and never part of the report itself, measures each plot
as the browser laid it out (bounding boxes of the SVG and of its marks) and writes what it found
into the page; `--dump-dom` hands the rendered page back, and the test reads it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app
from edgepack.results.store import open_store
from tests.results.conftest import add_run
from tests.unavailable import unavailable

pytestmark = pytest.mark.integration

CHECK = """
<script>
const plots = {};
for (const svg of document.querySelectorAll("svg.plot")) {
  const box = svg.getBoundingClientRect();
  const marks = [...svg.querySelectorAll("[data-value]")].map(m => m.getBBox());
  plots[svg.dataset.plot] = {
    width: box.width, height: box.height,
    marks: marks.length,
    drawn: marks.filter(b => b.width > 0 || b.height > 0).length,
    runs: [...svg.querySelectorAll("g.run")].map(g => Number(g.dataset.run)),
    medians: [...svg.querySelectorAll("g.run")].map(g => Number(g.dataset.median)),
  };
}
const out = document.createElement("pre");
out.id = "render-check";
out.textContent = JSON.stringify({plots, resources: performance.getEntriesByType("resource").length});
document.body.appendChild(out);
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    unavailable("chromium is not installed (apt-get install -y chromium; scripts/test installs it)")


def render(browser: str, page, profile) -> str:
    """Let headless Chromium load PAGE from disk and return the DOM it rendered."""
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={profile}", "--window-size=1000,3000", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_the_html_report_renders_its_plots_in_headless_chromium(tmp_path):
    browser = chromium()
    db = tmp_path / "h.sqlite3"
    medians = {}
    with open_store(db) as history:
        for i, (target, device, median) in enumerate([("pi-fp32", "pi4", 4.0), ("pi-int8", "pi4", 1.5), ("pi-int8", "orin", 0.8)]):
            x = np.random.default_rng(i).lognormal(np.log(median), 0.1, 250)
            run_id = add_run(history, latencies=x, target=target, device=device, model_bytes=int(50_000 * median))
            medians[run_id] = float(np.median(x))
    report = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--html", str(report)])
    assert result.exit_code == 0, result.output

    checked = tmp_path / "checked.html"
    checked.write_text(report.read_text().replace("</body>", CHECK + "</body>"))
    dom = render(browser, checked, tmp_path / "chromium-profile")
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    plots = check["plots"]

    assert set(plots) == {"latency", "load", "size", "p90", "accuracy", "memory"}
    for name, plot in plots.items():
        assert plot["width"] > 500 and plot["height"] > 60, name  # laid out at its size
        assert plot["marks"] > 0 and plot["drawn"] == plot["marks"], name  # every mark has a box on the page
    latency = plots["latency"]
    assert latency["runs"] == list(medians)
    assert latency["medians"] == pytest.approx(list(medians.values()), rel=1e-4)
    assert latency["marks"] >= 3 * 5  # histogram bins, box, median, p90 for each run
    assert plots["load"]["runs"] == list(medians) and plots["memory"]["runs"] == list(medians)
    assert plots["size"]["marks"] == 3  # one bar per target and device
    assert check["resources"] == 0  # the page fetched nothing
    assert "pi-int8 @ orin" in dom
