"""What a build shows while it runs: a live line on a terminal, one line per stage in a log."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

import edgepack.cli.build as build_cli
from edgepack.builder.plan import plan_build
from edgepack.cli.app import app
from tests.conftest import write_target
from tests.hard_models import outlier_input_model

pytestmark = pytest.mark.slow
runner = CliRunner()
PRUNED = "extends: raspberry-pi-4\nbuild: {precision: fp32, prune: {sparsity: 0.5, fine_tune_epochs: 2}}\n"


def on_fake_terminal(monkeypatch) -> io.StringIO:
    """Point the build's progress at a terminal that writes into a string; return the string."""
    screen = io.StringIO()
    monkeypatch.setattr(build_cli, "err_console", Console(file=screen, force_terminal=True, width=200, color_system="standard"))
    return screen


def text(screen: io.StringIO) -> str:
    """What the fake terminal received, without its control sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())


def test_fine_tuning_shows_each_epoch_with_its_validation_loss_on_a_terminal(isolated_user_dirs, digits_files, monkeypatch):
    model, data = digits_files
    screen = on_fake_terminal(monkeypatch)
    target = write_target(isolated_user_dirs, "sparse", PRUNED)
    result = runner.invoke(app, ["build", str(model), "--target", target, "--data", str(data), "--no-cache"])
    assert result.exit_code == 0, result.output
    shown = text(screen)
    assert "\x1b[" in screen.getvalue()  # redrawn in place
    assert re.search(r"epoch 1 of 2, loss [0-9.e+-]+, validation loss [0-9.e+-]+", shown), shown
    assert re.search(r"epoch 2 of 2, loss [0-9.e+-]+, validation loss [0-9.e+-]+", shown), shown
    assert re.search(r"fine-tune\s+\d+\.\d s", shown)  # the running stage with its elapsed time
    assert re.search(r"✓.*fine-tune\s+\d+\.\d\d s", shown)  # and a line that stays when it ends


def test_recovery_shows_each_attempt_and_what_it_tries_on_a_terminal(isolated_user_dirs, tmp_path, digits, monkeypatch):
    model, data = outlier_input_model(tmp_path, digits)
    screen = on_fake_terminal(monkeypatch)
    result = runner.invoke(app, ["build", str(model), "--target", "raspberry-pi-4", "--data", str(data), "--no-cache"])
    assert result.exit_code == 0, result.output
    shown = text(screen)
    assert re.search(r"attempt 2: .+ \(after plain: top-1 \d+\.\d%\)", shown), shown  # the plain build was attempt 1
    assert re.search(r"attempt \d: int8 with 1 layer\(s\) in float \(after [^:]+: top-1 \d+\.\d%\)", shown), shown


def test_piped_output_has_one_line_per_stage_and_nothing_that_redraws(isolated_user_dirs, digits_files):
    model, data = digits_files
    target = write_target(isolated_user_dirs, "sparse", PRUNED)
    result = runner.invoke(app, ["build", str(model), "--target", target, "--data", str(data), "--no-cache"])
    assert result.exit_code == 0, result.output
    stages = [s.name for s in plan_build(model, target, data, None, None).stages]
    done = [line.split()[1] for line in result.output.splitlines() if line.startswith("✓")]
    assert done == stages
    assert "\x1b" not in result.output and "\r" not in result.output
    assert "epoch 1 of" not in result.output


def test_a_bench_shows_its_step_with_the_elapsed_time_and_what_the_device_measures(digits_bundles, monkeypatch):
    import edgepack.cli.bench as bench_cli

    screen = io.StringIO()
    monkeypatch.setattr(bench_cli, "err_console", Console(file=screen, force_terminal=True, width=250, color_system="standard"))
    args = ["bench", str(digits_bundles["int8"]), "--runs", "10", "--warmup", "2", "--min-seconds", "0", "--cold-loads", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    shown = text(screen)
    assert re.search(r"bench\s+\d+\.\d s\s+measuring on local: 1 cold load\(s\), 2 warm-up, 10 timed runs \(at least 0 s of them\)", shown), shown
    assert "\x1b[" in screen.getvalue()
    monkeypatch.undo()
    piped = runner.invoke(app, args)  # off a terminal: one line per step, nothing redrawn
    assert piped.exit_code == 0 and "… measuring on local" in piped.output and "\x1b" not in piped.output


def test_the_build_callback_carries_each_epochs_figures_without_a_terminal(isolated_user_dirs, digits_files):
    from edgepack.builder.pipeline import build

    model, data = digits_files
    target = write_target(isolated_user_dirs, "sparse", PRUNED)
    heard = []
    build(model, target, data=data, use_cache=False, on_stage=lambda stage, detail, seconds: heard.append((stage, detail, seconds)))
    epochs = [detail for stage, detail, seconds in heard if getattr(detail, "kind", "") == "epoch"]
    assert [(d.k, d.n) for d in epochs] == [(1, 2), (2, 2)]
    assert all(stage == "fine-tune" for stage, detail, _ in heard if detail in epochs)
    assert all(d.figures["loss"] > 0 and d.figures["val_loss"] > 0 for d in epochs)
    assert epochs[-1].startswith("epoch 2 of 2")  # and it is still the text a plain renderer prints
