"""User values that look like rich markup (`[/x]`, `[bold]x[/bold]`) print as written.

Every command that echoes a name, host, path, profile value or message must show the text
literally: no `MarkupError` after the file was written, no value swallowed or styled, and the
inventory stays listable afterwards.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from edgepack.cli import render
from edgepack.cli.app import app

runner = CliRunner()

CLOSE = "[/x]"
STYLED = "[bold]x[/bold]"


@pytest.fixture(autouse=True)
def wide_quiet_home(tmp_path, monkeypatch):
    """A wide console (so table cells are not folded mid-value), and no real ~/.ssh or agent."""
    home = tmp_path / "home-dir"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    for con in (render.console, render.err_console):
        monkeypatch.setattr(con, "_width", 400)


def clean(result, code: int = 0):
    """Check that a command ended as a user should see it, and return its output."""
    out = result.output
    assert result.exit_code == code, out
    for bad in ("MarkupError", "internal error", "Traceback"):
        assert bad not in out, out
    return out


def run(*args: str, code: int = 0) -> str:
    return clean(runner.invoke(app, list(args)), code)


def inventory_still_lists(inventory: str | None = None) -> str:
    extra = ["--inventory", inventory] if inventory else []
    table = run("devices", "list", *extra)
    assert "local" in table
    rows = json.loads(run("devices", "list", "--json", *extra))
    assert rows[0]["name"] == "local"
    return table


# -- targets -----------------------------------------------------------------------------------


def test_targets_set_echoes_a_list_value_with_a_closing_tag(isolated_user_dirs):
    assert "wrote targets/lab.yaml (extends pixel-8)" in run("targets", "new", "lab", "--from", "pixel-8")
    out = run("targets", "set", "lab", "runtime.delegates=[/x.so]")
    assert "updated targets/lab.yaml: runtime.delegates=[/x.so]" in out
    assert "/x.so" in (isolated_user_dirs / "targets" / "lab.yaml").read_text()
    assert "/x.so" in run("targets", "show", "lab")
    assert "- /x.so" in run("targets", "show", "lab", "--resolved")
    inventory_still_lists()


@pytest.mark.parametrize("text", [f"{CLOSE} my board", f"{STYLED} my board"])
def test_targets_set_echoes_a_description_with_markup(isolated_user_dirs, text):
    run("targets", "new", "lab", "--from", "pixel-8")
    out = run("targets", "set", "lab", f"description='{text}'")
    assert f"updated targets/lab.yaml: description='{text}'" in out
    assert text in run("targets", "show", "lab")
    assert text in run("targets", "show", "lab", "--resolved")
    listed = run("targets", "list")
    assert "lab" in listed and "targets/lab.yaml" in listed
    inventory_still_lists()


def test_targets_set_of_an_unquoted_bracket_value_is_a_clean_refusal(isolated_user_dirs):
    run("targets", "new", "lab", "--from", "pixel-8")
    before = (isolated_user_dirs / "targets" / "lab.yaml").read_text()
    out = run("targets", "set", "lab", f"description={CLOSE} my board", code=2)
    assert f"'description={CLOSE} my board': the value is not valid YAML" in out
    assert (isolated_user_dirs / "targets" / "lab.yaml").read_text() == before


def test_targets_new_into_a_dir_with_brackets(isolated_user_dirs):
    out = run("targets", "new", "lab", "--from", "pixel-8", "--dir", CLOSE)
    assert f"wrote {CLOSE}/lab.yaml (extends pixel-8)" in out
    assert (isolated_user_dirs / CLOSE / "lab.yaml").is_file()
    styled = run("targets", "new", "lab", "--from", "pixel-8", "--dir", STYLED)
    assert f"wrote {STYLED}/lab.yaml (extends pixel-8)" in styled
    again = run("targets", "new", "lab", "--from", "pixel-8", "--dir", CLOSE, code=2)
    assert f"{CLOSE}/lab.yaml already exists" in again


def test_target_names_with_brackets_are_refused_cleanly():
    assert f"'{CLOSE}' is not a valid profile name" in run("targets", "new", CLOSE, "--from", "pixel-8", code=2)
    assert f"{CLOSE}: no such file" in run("targets", "new", "lab", "--from", CLOSE, code=2)  # a '/' makes it a path
    assert f"{STYLED}: no such file" in run("targets", "show", STYLED, code=2)
    assert f"{CLOSE}: no such file" in run("targets", "set", CLOSE, "build.precision=int8", code=2)


def test_targets_list_and_validate_show_a_profile_file_named_with_brackets(isolated_user_dirs):
    (isolated_user_dirs / "targets").mkdir()
    (isolated_user_dirs / "targets" / "[bold]b.yaml").write_text("extends: pixel-8\n")
    (isolated_user_dirs / "targets" / "[red]bad.yaml").write_text("extends: pixel-8\nbuild: {precison: fp16}\n")
    listed = run("targets", "list")
    assert "[bold]b" in listed and "targets/[bold]b.yaml" in listed
    assert "invalid: [red]bad (targets/[red]bad.yaml)" in listed
    assert "ok      [bold]b (targets/[bold]b.yaml)" in run("targets", "validate", code=2)
    assert "[bold]b" in run("targets", "show", "[bold]b")


# -- devices -----------------------------------------------------------------------------------


def test_devices_add_list_group_remove_with_markup_in_every_value(tmp_path, isolated_user_dirs):
    inventory = str(tmp_path / "lab.yaml")
    key = isolated_user_dirs / "[/k]"  # the directory "[" holding the key file "k]"
    key.parent.mkdir()
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n")
    out = run("devices", "add", "mk", "--host", "[/evil]", "--user", STYLED, "--workdir", CLOSE,
              "--python", "[/py]", "--key", "[/k]", "--target", "[/t]", "--inventory", inventory)
    assert f"added device mk ({STYLED}@[/evil]) to {inventory}" in out
    assert "edgepack devices trust mk" in out

    table = inventory_still_lists(inventory)
    for value in ("[/evil]", STYLED, CLOSE, "[/py]", "[/k]", "[/t]"):
        assert value in table, value
    row = json.loads(run("devices", "list", "--json", "--inventory", inventory))[1]
    assert row == {"name": "mk", "host": "[/evil]", "port": None, "user": STYLED, "key": str(key),  # a relative key is stored absolute
                   "python": "[/py]", "workdir": CLOSE, "target": "[/t]", "connect_timeout_s": 10.0, "jump": None}

    assert f"group g: mk (in {inventory})" in run("devices", "group", "g", "mk", "--inventory", inventory)
    assert "g: mk" in run("devices", "group", "g", "--inventory", inventory)
    assert "group g: mk" in inventory_still_lists(inventory)
    assert "deleted group g (mk)" in run("devices", "group", "g", "--delete", "--inventory", inventory)

    assert f"removed device mk ({STYLED}@[/evil])" in run("devices", "remove", "mk", "--inventory", inventory)
    assert "[/evil]" not in inventory_still_lists(inventory)


def test_devices_add_with_each_markup_value_alone(tmp_path):
    inventory = str(tmp_path / "lab.yaml")
    run("devices", "add", "h", "--host", "[/evil]", "--inventory", inventory)
    run("devices", "add", "w", "--host", "w.lan", "--workdir", CLOSE, "--inventory", inventory)
    assert f"added device u ({CLOSE}@u.lan)" in run("devices", "add", "u", "--host", "u.lan", "--user", CLOSE, "--inventory", inventory)
    table = inventory_still_lists(inventory)
    assert "[/evil]" in table and table.count(CLOSE) == 2


def test_device_and_group_names_with_brackets_are_refused_cleanly(tmp_path):
    inventory = str(tmp_path / "lab.yaml")
    assert f"invalid device '{CLOSE}'" in run("devices", "add", CLOSE, "--host", "h", "--inventory", inventory, code=2)
    assert f"invalid device '{STYLED}'" in run("devices", "add", STYLED, "--host", "h", "--inventory", inventory, code=2)
    assert f"unknown device '{CLOSE}'" in run("devices", "remove", CLOSE, "--inventory", inventory, code=2)
    run("devices", "add", "pi", "--host", "h", "--inventory", inventory)
    assert f"bad group name '{CLOSE}'" in run("devices", "group", CLOSE, "pi", "--inventory", inventory, code=2)
    assert f"unknown device '{STYLED}'" in run("devices", "group", "g", STYLED, "--inventory", inventory, code=2)
    assert f"no group '{CLOSE}'" in run("devices", "group", CLOSE, "--inventory", inventory, code=2)
    inventory_still_lists(inventory)


def test_an_inventory_path_with_brackets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run("devices", "add", "pi", "--host", "h", "--inventory", f"{CLOSE}/inv.yaml")
    assert f"added device pi (h) to {CLOSE}/inv.yaml" in out
    assert f"devices ({CLOSE}/inv.yaml)" in inventory_still_lists(f"{CLOSE}/inv.yaml")


def test_a_config_dir_with_brackets(tmp_path, monkeypatch):
    config = tmp_path / "[" / "x]" / "config"
    config.mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    where = str(config / "edgepack" / "devices.yaml")
    assert CLOSE in where
    assert f"to {where}" in run("devices", "add", "pi", "--host", "[/evil]")
    assert f"devices ({where})" in inventory_still_lists()
    (config / "edgepack" / "targets").mkdir()
    (config / "edgepack" / "targets" / "mine.yaml").write_text("extends: pixel-8\n")
    assert str(config / "edgepack" / "targets" / "mine.yaml") in run("targets", "list")


def test_check_and_trust_of_a_host_with_brackets_fail_cleanly(tmp_path):
    inventory = str(tmp_path / "lab.yaml")
    run("devices", "add", "ev", "--host", "[/evil]", "--connect-timeout", "3", "--inventory", inventory)
    assert "[/evil]" in run("devices", "check", "ev", "--inventory", inventory, code=2)
    assert "[/evil]" in run("devices", "trust", "ev", "--yes", "--inventory", inventory, code=2)
    inventory_still_lists(inventory)


# -- results history ---------------------------------------------------------------------------


def test_report_and_compare_echo_paths_and_filters_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = f"{CLOSE}/h.sqlite3"
    out = run("report", "--db", db, "--target", CLOSE, "--device", STYLED)
    assert f"no runs matching target {CLOSE}, device {STYLED} in {db}" in out
    assert f"wrote {CLOSE}/r.html (0 runs)" in run("report", "--db", db, "--html", f"{CLOSE}/r.html")
    assert f"no results history at {db}" in run("compare", "last", "last~1", "--db", db, code=2)


# -- renderers fed directly (the bench and build paths need a real model) -------------------------


def _printed(capsys, renderable=None) -> str:
    if renderable is not None:
        render.console.print(renderable)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "MarkupError" not in text
    return text


def test_build_tables_show_layer_names_and_errors_as_written(capsys):
    from edgepack.cli.build import render_quantization

    render_quantization({
        "explain_error": f"{CLOSE} could not be read",
        "layer_errors": [{"layer": CLOSE, "op": STYLED, "error": 0.5, "measure": "[/m]"}],
        "attempts": [
            {"strategy": "plain", "top1_agreement": 0.9, "accuracy_drop": 0.1, "size_bytes": 2048, "passed": False, "error": f"{CLOSE} broke"},
            {"strategy": "[/s]", "top1_agreement": None, "accuracy_drop": None, "size_bytes": None, "passed": True, "error": None},
        ],
    })
    out = _printed(capsys)
    for text in (f"{CLOSE} could not be read", STYLED, "[/m]", f"{CLOSE} broke", "[/s]"):
        assert text in out, text


def test_fleet_table_and_progress_show_names_and_messages_as_written(capsys):
    from edgepack.cli import fleet_view as fleet

    failed = SimpleNamespace(device=CLOSE, state="failed", seconds=1.0, result=None,
                             error=SimpleNamespace(message=f"{STYLED} is down"), step=None)
    waiting = SimpleNamespace(device="pi", state="running", seconds=None, result=None, error=None, step=f"pushing {CLOSE}")
    out = _printed(capsys, fleet.fleet_table([failed, waiting], f"{CLOSE}.bundle on 2 devices"))
    for text in (f"{CLOSE}.bundle on 2 devices", CLOSE, f"{STYLED} is down", f"pushing {CLOSE}"):
        assert text in out, text
    assert not render.console.is_terminal  # under capsys: one line per finished device, no live table
    progress = fleet.FleetProgress(f"{CLOSE}.bundle", 2, 8)
    progress.update([failed, waiting])
    progress.close()
    out = _printed(capsys)
    assert f"measuring {CLOSE}.bundle on 2 devices" in out and f"{CLOSE}: {STYLED} is down" in out


def test_results_tables_show_stored_names_as_written(capsys):
    from edgepack.results.compare import GateRow
    from edgepack.results.report import gate_table, runs_table

    summary = {k: None for k in ("model_bytes", "load_cold_ms", "latency_p50_ms", "latency_p90_ms", "peak_memory_mb", "accuracy", "top1_vs_host")}
    run_record = SimpleNamespace(label="#1", created="2026-01-01T00:00:00+00:00", device=STYLED, target=CLOSE,
                                 format="tflite", precision="[/p]", passed=True, summary=lambda: summary)
    out = _printed(capsys, runs_table([run_record], f"runs ({CLOSE}/h.sqlite3)"))
    for text in (f"runs ({CLOSE}/h.sqlite3)", STYLED, CLOSE, "tflite [/p]"):
        assert text in out, text
    gate = gate_table([GateRow("latency p90", "ms", 1.0, 1.2, 0.1)], "#1", f"#2 ({CLOSE} on {STYLED})")
    assert f"regression gate: #2 ({CLOSE} on {STYLED}) against baseline #1" in _printed(capsys, gate)


def test_bench_summary_shows_delegates_and_device_facts_as_written(capsys):
    from edgepack.cli.bench import render_bench

    report = SimpleNamespace(
        system=SimpleNamespace(arch=CLOSE, cpu_model=STYLED, cores=4, memory_total_mb=1024.0, os="[/os]", python="3.11"),
        runtime=SimpleNamespace(name="tflite", version="[/v]", delegates=["/x.so", CLOSE], providers=None),
        notes=[f"note {CLOSE}"], load=None, first_inference_ms=1.0, latency_ms=None, throughput_per_s=None,
        memory=None, check=None,
    )
    result = SimpleNamespace(
        report=report,
        manifest=SimpleNamespace(profile=SimpleNamespace(budgets=SimpleNamespace(max_p90_latency_ms=None, max_peak_memory_mb=None)),
                                 format=SimpleNamespace(value="tflite"), precision=SimpleNamespace(value="fp32")),
        bundle=SimpleNamespace(name=f"{CLOSE}-bundle"), device=STYLED,
        push=SimpleNamespace(files_sent=1, bytes_sent=1024, files_skipped=0), report_path=None,
    )
    render_bench(result)
    out = _printed(capsys)
    for text in (f"{CLOSE}-bundle on {STYLED} (tflite fp32)", f"runtime: tflite [/v] (/x.so, {CLOSE})",
                 f"system: {CLOSE}, {STYLED}, 4 cores", "[/os]", f"note {CLOSE}"):
        assert text in out, text
