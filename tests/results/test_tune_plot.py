"""`edgepack report --html` draws each `edgepack tune` study: its trials and their Pareto front."""

from __future__ import annotations

import re

import numpy as np

from edgepack.results.html import render_html
from edgepack.results.store import open_store
from tests.results.conftest import add_run


def test_html_plots_each_tune_study_with_its_pareto_front(db):
    # Four trials of one study: 0 and 2 trade latency for size (the front), 1 is beaten by 0 on
    # both, 3 is the fastest but missed a budget. A bench outside any study is not drawn.
    trials = [(2.0, 40_000, None), (3.0, 50_000, None), (4.0, 20_000, None), (1.0, 10_000, ["p90 over budget"])]
    with open_store(db) as history:
        for number, (ms, size, failures) in enumerate(trials):
            add_run(history, latencies=np.full(50, ms), model_bytes=size, failures=failures, trial={"study": "s1", "number": number})
        add_run(history, latencies=np.full(50, 0.5), model_bytes=5_000)
        page = render_html(history.runs())
    plot = page[page.index('data-plot="tune"'):page.index("</svg>", page.index('data-plot="tune"'))]
    kinds = dict(re.findall(r'<circle class="trial (\w+)" data-trial="(\d+)"', plot)[i][::-1] for i in range(4))
    assert kinds == {"0": "pareto", "1": "ok", "2": "pareto", "3": "missed"}
    assert "study s1" in plot and plot.count("<circle") == 4 and 'class="front"' in plot
