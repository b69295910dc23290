"""`edgepack targets ...` end to end through the CLI, including exit codes and error output."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from edgepack.cli.app import app
from edgepack.errors import ProfileError

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_list_shows_every_family_with_its_source():
    result = run("targets", "list", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"phone", "raspberry-pi", "jetson", "microcontroller"} <= {r["family"] for r in rows.values()}
    assert rows["pixel-8"]["precision"] == "fp16" and rows["pixel-8"]["origin"] == "builtin"


def test_list_filters_by_family_and_rejects_unknown_family():
    rows = json.loads(run("targets", "list", "--family", "jetson", "--json").stdout)
    assert {r["family"] for r in rows} == {"jetson"} and len(rows) >= 3
    result = run("targets", "list", "--family", "jetsn")
    assert result.exit_code == 2 and "did you mean jetson?" in result.output


def test_list_shows_which_file_won(isolated_user_dirs):
    (isolated_user_dirs / "targets").mkdir()
    (isolated_user_dirs / "targets" / "pixel-8.yaml").write_text("extends: phone\n")
    rows = {r["name"]: r for r in json.loads(run("targets", "list", "--json").stdout)}
    assert rows["pixel-8"]["origin"] == "project"
    assert rows["pixel-8"]["file"] == str(isolated_user_dirs / "targets" / "pixel-8.yaml")


def test_show_prints_as_written_or_resolved():
    plain = run("targets", "show", "raspberry-pi-4")
    assert plain.exit_code == 0 and "extends: raspberry-pi" in plain.output and "engine" not in plain.output
    resolved = run("targets", "show", "raspberry-pi-4", "--resolved")
    assert resolved.exit_code == 0 and "engine: tflite" in resolved.output and "precision: int8" in resolved.output


def test_unknown_target_exits_2_with_did_you_mean_and_no_traceback():
    result = run("targets", "show", "pixel8")
    assert result.exit_code == 2
    assert "unknown target 'pixel8'" in result.output and "did you mean pixel-8" in result.output
    assert "Traceback" not in result.output


def test_validate_all_builtins_passes():
    result = run("targets", "validate")
    assert result.exit_code == 0 and "ok      cortex-m4" in result.output


def test_validate_lists_every_problem_and_exits_2(isolated_user_dirs):
    bad = isolated_user_dirs / "bad.yaml"
    bad.write_text("extends: raspberry-pi-4\nbuild:\n  precison: fp16\nruntime:\n  threads: lots\n")
    good = isolated_user_dirs / "good.yaml"
    good.write_text("extends: raspberry-pi-4\n")
    result = run("targets", "validate", str(bad), str(good))
    assert result.exit_code == 2
    assert f"{bad}:3:3: build.precison: unknown key" in result.output
    assert f"{bad}:5:3: runtime.threads:" in result.output
    assert "ok      good" in result.output and "1 of 2 profiles are invalid" in result.output
    assert "Traceback" not in result.output


def test_validate_a_missing_file_exits_2(isolated_user_dirs):
    result = run("targets", "validate", "nope.yaml")
    assert result.exit_code == 2 and "nope.yaml: no such file" in result.output


def test_new_then_set_then_show(isolated_user_dirs):
    assert run("targets", "new", "lab", "--from", "pixel-8").exit_code == 0
    assert run("targets", "set", "lab", "build.precision=int8", "runtime.delegates=[xnnpack]").exit_code == 0
    resolved = run("targets", "show", "lab", "--resolved").output
    assert "precision: int8" in resolved and "- xnnpack" in resolved and "- gpu" not in resolved
    again = run("targets", "new", "lab", "--from", "pixel-8")
    assert again.exit_code == 2 and "already exists" in again.output


def test_set_invalid_value_exits_2_and_leaves_the_file(isolated_user_dirs):
    run("targets", "new", "lab", "--from", "pixel-8")
    path = isolated_user_dirs / "targets" / "lab.yaml"
    before = path.read_text()
    result = run("targets", "set", "lab", "build.io_dtype=int8")
    assert result.exit_code == 2 and "needs precision int8" in result.output
    assert path.read_text() == before


def test_set_refuses_builtins_with_a_hint():
    result = run("targets", "set", "pixel-8", "build.precision=int8")
    assert result.exit_code == 2 and "edgepack targets new" in result.output


def test_schema_is_json_schema_of_the_profile():
    schema = json.loads(run("targets", "schema").stdout)
    assert schema["title"] == "Profile"
    assert {"build", "runtime", "budgets", "hardware"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_debug_variable_shows_the_traceback(monkeypatch):
    monkeypatch.delenv("EDGEPACK_DEBUG", raising=False)
    plain = run("targets", "show", "pixel8")
    assert isinstance(plain.exception, SystemExit) and plain.exception.code == 2
    assert "unknown target 'pixel8'" in plain.output
    monkeypatch.setenv("EDGEPACK_DEBUG", "1")
    debug = run("targets", "show", "pixel8")
    assert isinstance(debug.exception, ProfileError) and debug.exception.message == "unknown target 'pixel8'"


def test_cli_start_does_not_import_heavy_libraries():
    code = (
        "import sys, edgepack.cli.app\n"
        "heavy = [m for m in ('tensorflow', 'onnxruntime', 'tf2onnx', 'keras', 'onnx') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "edgepack", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == __import__("edgepack").__version__


def test_brackets_in_messages_print_as_written(isolated_user_dirs):
    result = run("targets", "validate", "[old]/x.yaml")
    assert result.exit_code == 2 and "[old]/x.yaml: no such file" in result.output


def test_set_on_a_broken_profile_says_where_it_is_broken(isolated_user_dirs):
    (isolated_user_dirs / "targets").mkdir()
    (isolated_user_dirs / "targets" / "b.yaml").write_text("extends: pixel-8\nbuild: {precision: fp16\n")
    result = run("targets", "set", "b", "build.precision=int8")
    assert result.exit_code == 2 and "b.yaml:3:1: YAML syntax error" in result.output and "Traceback" not in result.output


def test_a_profile_that_is_not_text_is_reported_not_a_crash(isolated_user_dirs):
    (isolated_user_dirs / "targets").mkdir()
    (isolated_user_dirs / "targets" / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    listed = run("targets", "list")
    assert listed.exit_code == 0 and "bin" in listed.output and "not a text file" in listed.output
    assert run("targets", "validate").exit_code == 2


def test_a_profile_that_extends_itself_says_so(isolated_user_dirs):
    (isolated_user_dirs / "targets").mkdir()
    (isolated_user_dirs / "targets" / "loop.yaml").write_text("extends: loop\n")
    result = run("targets", "show", "loop", "--resolved")
    assert result.exit_code == 2 and "the profile extends itself" in result.output


def test_an_error_about_a_key_set_from_the_cli_points_into_the_edited_file(isolated_user_dirs):
    run("targets", "new", "lab", "--from", "raspberry-pi-4")
    result = run("targets", "set", "lab", "build.io_dtype=int8", "build.precision=fp16")
    assert result.exit_code == 2
    assert str(isolated_user_dirs / "targets" / "lab.yaml") in result.output


def test_an_unwritable_profile_directory_is_one_line():
    result = runner.invoke(app, ["targets", "new", "lab", "--from", "raspberry-pi-4", "--dir", "/sys/edgepack-targets"])
    assert result.exit_code == 2, result.output
    assert "cannot write the profile /sys/edgepack-targets/lab.yaml" in " ".join(result.output.split())
    assert "Traceback" not in result.output and "internal error" not in result.output


def test_new_from_the_source_checkout_never_writes_among_the_builtins(monkeypatch, isolated_user_dirs):
    from edgepack.profile.store import builtin_dir, user_dir

    monkeypatch.chdir(builtin_dir().parent)  # ./targets is the built-in folder here
    stray = builtin_dir() / "lab-checkout.yaml"
    try:
        created = run("targets", "new", "lab-checkout", "--from", "pixel-8")
        assert created.exit_code == 0, created.output
        assert not stray.exists()
        assert (user_dir() / "lab-checkout.yaml").is_file() and str(user_dir()) in created.output.replace("\n", "")
        edited = run("targets", "set", "lab-checkout", "build.precision=int8")
        assert edited.exit_code == 0, edited.output
        assert "precision: int8" in run("targets", "show", "lab-checkout", "--resolved").output
        into_builtins = run("targets", "new", "lab-checkout2", "--from", "pixel-8", "--dir", "targets")
        assert into_builtins.exit_code == 2 and "built-in" in into_builtins.output
        assert not (builtin_dir() / "lab-checkout2.yaml").exists()
    finally:
        stray.unlink(missing_ok=True)
        (builtin_dir() / "lab-checkout2.yaml").unlink(missing_ok=True)


def test_a_piped_target_list_prints_every_column_whole():
    import os

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    piped = subprocess.run([sys.executable, "-m", "edgepack", "targets", "list"], capture_output=True, text=True, timeout=60, env=env)
    assert piped.returncode == 0, piped.stderr
    assert "…" not in piped.stdout
    header = next(line for line in piped.stdout.splitlines() if "name" in line)
    assert all(col in header for col in ("family", "format", "precision", "engine", "source"))
    assert any("raspberry-pi-4" in line and "raspberry-pi" in line.split("raspberry-pi-4", 1)[1] for line in piped.stdout.splitlines())


def test_a_profile_file_path_works_wherever_a_target_name_does(isolated_user_dirs):
    from edgepack.profile.store import load_target

    lab = isolated_user_dirs / "my-lab"
    lab.mkdir()
    (lab / "pi.yaml").write_text("extends: raspberry-pi-4\nbuild: {precision: fp16}\n")
    (isolated_user_dirs / "targets").mkdir()
    (isolated_user_dirs / "targets" / "pi-tuned.yaml").write_text("extends: raspberry-pi-4\n")
    assert load_target("./my-lab/pi.yaml").build.precision.value == "fp16"
    shown = run("targets", "show", "targets/pi-tuned.yaml")
    assert shown.exit_code == 0 and "extends: raspberry-pi-4" in shown.output
    resolved = run("targets", "show", "./my-lab/pi.yaml", "--resolved")
    assert resolved.exit_code == 0 and "precision: fp16" in resolved.output
    edited = run("targets", "set", "my-lab/pi.yaml", "bench.runs=50")
    assert edited.exit_code == 0, edited.output
    assert "runs: 50" in (lab / "pi.yaml").read_text()
    missing = run("targets", "show", "./my-lab/nope.yaml")
    assert missing.exit_code == 2 and "my-lab/nope.yaml: no such file" in missing.output and "Traceback" not in missing.output


def test_set_writes_through_a_linked_profile(isolated_user_dirs):
    real = isolated_user_dirs / "dotfiles" / "lab.yaml"
    real.parent.mkdir()
    real.write_text("extends: raspberry-pi-4\n")
    (isolated_user_dirs / "targets").mkdir()
    link = isolated_user_dirs / "targets" / "lab.yaml"
    link.symlink_to(real)
    assert run("targets", "set", "lab", "bench.runs=50").exit_code == 0
    assert link.is_symlink() and "runs: 50" in real.read_text()


def test_a_tune_section_beyond_the_builds_limits_is_refused_up_front(isolated_user_dirs):
    (isolated_user_dirs / "targets").mkdir()
    (isolated_user_dirs / "targets" / "lab.yaml").write_text("extends: raspberry-pi-4\ntune: {fine_tune_epochs: [10, 5000]}\n")
    result = run("targets", "validate", "targets/lab.yaml")
    assert result.exit_code == 2 and "tune.fine_tune_epochs values are at least 1 and at most 1000" in result.output, result.output
