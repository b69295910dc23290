"""Bounds: what a bench may ask for and which run ids exist are capped, with the cap in the message, before any work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app
from tests.conftest import write_target

runner = CliRunner()
HUGE = "99999999999999999999"


def one_line_refusal(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    text = " ".join(word for word in result.output.split() if word not in "│╭╮╰╯")
    for e in expected:
        assert e in text, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--min-seconds", "inf"], "--min-seconds"),
        (["--min-seconds", "nan"], "--min-seconds"),
        (["--min-seconds", "7200"], "less than or equal to 3600"),
        (["--cold-loads", "1000"], "less than or equal to 100"),
        (["--runs", "1e38"], "--runs"),
        (["--runs", "200000"], "less than or equal to 100000"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_bench_options_past_their_cap_are_refused(isolated_user_dirs, args, expected):
    (isolated_user_dirs / "b").mkdir()
    one_line_refusal(runner.invoke(app, ["bench", "b", *args]), expected)


def test_a_profile_asking_for_too_much_is_invalid(isolated_user_dirs):
    write_target(isolated_user_dirs, "greedy", "extends: raspberry-pi-4\nbench: {runs: 1e38, min_seconds: .inf}\n")
    one_line_refusal(runner.invoke(app, ["targets", "validate", "targets/greedy.yaml"]), "bench.runs")


def test_huge_run_ids_name_no_run(isolated_user_dirs, tmp_path):
    from edgepack.results.store import open_store
    from tests.results.conftest import add_run

    db = str(tmp_path / "h.sqlite3")
    with open_store(tmp_path / "h.sqlite3") as history:
        add_run(history)
    result = runner.invoke(app, ["report", "--last", HUGE, "--db", db])
    assert result.exit_code == 0 and "internal error" not in result.output, result.output
    one_line_refusal(runner.invoke(app, ["compare", HUGE, "last", "--db", db]), f"no run #{HUGE}")
    one_line_refusal(runner.invoke(app, ["compare", f"last~{HUGE}", "last", "--db", db]), "names no run")
    from edgepack.results.gate import resolve_baseline
    from edgepack.results.store import ResultsError

    with pytest.raises(ResultsError, match=f"no run #{HUGE}"):
        resolve_baseline(HUGE, "10%", tmp_path / "h.sqlite3")


def test_the_agent_refuses_work_past_the_same_caps(tmp_path):
    from edgepack.benchmark import AGENT

    for args in (["--min-seconds", "inf"], ["--min-seconds", "nan"], ["--cold-loads", "1000"], ["--runs", "100001"]):
        out = subprocess.run([sys.executable, str(AGENT), str(tmp_path), *args], capture_output=True, text=True, timeout=60)
        report = json.loads(out.stdout)
        assert report["ok"] is False and any("must be between 0 and" in e for e in report["errors"]), (args, report["errors"])
