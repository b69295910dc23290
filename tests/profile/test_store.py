"""Loading, inheritance and validation of target profiles, with errors that point into the YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepack.errors import ProfileError
from edgepack.profile.schema import Engine, Format, Precision
from edgepack.profile.store import Catalog, builtin_dir, load_target

FAMILIES = {"phone", "raspberry-pi", "jetson", "microcontroller"}
REQUIRED = {
    "pixel-8", "android-arm64", "raspberry-pi-4", "raspberry-pi-5", "raspberry-pi-zero-2w",
    "jetson-orin-nano", "jetson-xavier-nx", "cortex-m4", "cortex-m7", "esp32-s3",
}


def write(dir: Path, name: str, text: str) -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / f"{name}.yaml"
    path.write_text(text)
    return path


def problem(exc: pytest.ExceptionInfo) -> str:
    return "\n".join([exc.value.message, *exc.value.details])


def test_every_builtin_profile_validates():
    catalog = Catalog()
    names = set(catalog.sources())
    assert FAMILIES | REQUIRED <= names
    for name in names:
        assert catalog.load(name).profile.name == name


@pytest.mark.parametrize(
    "name, fmt, precision, engine",
    [
        ("raspberry-pi-4", Format.tflite, Precision.int8, Engine.tflite),
        ("pixel-8", Format.tflite, Precision.fp16, Engine.tflite),
        ("jetson-orin-nano", Format.onnx, Precision.fp16, Engine.onnxruntime),
        ("cortex-m7", Format.tflite_micro, Precision.int8, Engine.tflite_micro),
    ],
)
def test_each_family_builds_for_its_best_runtime(name, fmt, precision, engine):
    p = Catalog().load(name).profile
    assert (p.build.format, p.build.precision, p.runtime.engine) == (fmt, precision, engine)


def test_concrete_device_inherits_and_overrides_its_family():
    loaded = Catalog().load("raspberry-pi-5")
    p = loaded.profile
    assert p.hardware.cpu == "cortex-a76" and p.hardware.clock_mhz == 2400
    assert p.budgets.max_p90_latency_ms == 40  # overridden
    assert p.budgets.max_peak_memory_mb == 512  # inherited
    assert p.runtime.delegates == ["xnnpack"]
    assert [x.name for x in loaded.chain] == ["raspberry-pi-5.yaml", "raspberry-pi.yaml"]


def test_extends_chains_merge_deeply(isolated_user_dirs):
    targets = isolated_user_dirs / "targets"
    write(targets, "pi-a", "extends: raspberry-pi-4\nbuild: {prune: {sparsity: 0.5}}\n")
    write(targets, "pi-b", "extends: pi-a\nbuild: {prune: {fine_tune_epochs: 1}}\n")
    p = Catalog().load("pi-b").profile
    assert p.build.prune.sparsity == 0.5 and p.build.prune.fine_tune_epochs == 1
    assert p.build.precision is Precision.int8 and p.hardware.cpu == "cortex-a72"


def test_project_profile_shadows_user_and_builtin(isolated_user_dirs, monkeypatch):
    user = Path(__import__("os").environ["XDG_CONFIG_HOME"]) / "edgepack" / "targets"
    write(user, "raspberry-pi-4", "extends: raspberry-pi\nbudgets: {max_p90_latency_ms: 77}\n")
    catalog = Catalog()
    assert catalog.find("raspberry-pi-4").origin == "user"
    assert catalog.load("raspberry-pi-4").profile.budgets.max_p90_latency_ms == 77
    write(isolated_user_dirs / "targets", "raspberry-pi-4", "extends: raspberry-pi\nbudgets: {max_p90_latency_ms: 66}\n")
    assert Catalog().find("raspberry-pi-4").origin == "project"
    assert Catalog().load("raspberry-pi-4").profile.budgets.max_p90_latency_ms == 66


def test_a_profile_may_extend_the_one_it_shadows(isolated_user_dirs):
    write(isolated_user_dirs / "targets", "raspberry-pi-4", "extends: raspberry-pi-4\nbudgets: {max_p90_latency_ms: 12}\n")
    p = Catalog().load("raspberry-pi-4").profile
    assert p.budgets.max_p90_latency_ms == 12 and p.hardware.cpu == "cortex-a72"


def test_unknown_target_suggests_close_names():
    with pytest.raises(ProfileError) as exc:
        Catalog().load("raspbery-pi-4")
    assert "unknown target 'raspbery-pi-4'" in exc.value.message
    assert "raspberry-pi-4" in exc.value.hint


def test_unknown_key_names_file_line_and_suggests_the_key(isolated_user_dirs):
    path = write(isolated_user_dirs / "targets", "t", "extends: raspberry-pi-4\nbuild:\n  precison: fp16\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("t")
    assert f"{path}:3:3: build.precison: unknown key 'precison' (did you mean 'precision'?)" in problem(exc)


def test_wrong_type_names_file_line_and_key(isolated_user_dirs):
    path = write(isolated_user_dirs / "targets", "t", "extends: raspberry-pi-4\nruntime:\n  threads: many\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("t")
    assert f"{path}:3:3: runtime.threads:" in problem(exc)
    assert "integer" in problem(exc)


def test_bad_enum_value_suggests_the_closest(isolated_user_dirs):
    path = write(isolated_user_dirs / "targets", "t", "extends: raspberry-pi-4\nbuild: {format: tflight}\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("t")
    text = problem(exc)
    assert f"{path}:2:9: build.format: unknown value 'tflight' (did you mean 'tflite'?)" in text
    assert "tflite-micro" in text


def test_fp16_with_integer_io_is_a_contradiction_with_a_fix(isolated_user_dirs):
    path = write(isolated_user_dirs / "targets", "t", "extends: raspberry-pi-4\nbuild:\n  precision: fp16\n  io_dtype: int8\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("t")
    assert f"{path}:4:3: build.io_dtype: io_dtype int8 needs precision int8 (got fp16)" in problem(exc)
    assert "set build.io_dtype: float32" in problem(exc)


def test_tflite_micro_requires_int8(isolated_user_dirs):
    path = write(isolated_user_dirs / "targets", "t", "extends: cortex-m7\nbuild:\n  precision: fp16\n  io_dtype: float32\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("t")
    assert f"{path}:3:3: build.precision: format tflite-micro runs full-integer models only" in problem(exc)


def test_engine_must_load_the_format(isolated_user_dirs):
    write(isolated_user_dirs / "targets", "t", "extends: raspberry-pi-4\nruntime: {engine: onnxruntime}\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("t")
    assert "runtime.engine onnxruntime loads onnx models, but build.format is tflite" in problem(exc)


def test_yaml_syntax_error_names_file_and_line(isolated_user_dirs):
    path = write(isolated_user_dirs / "targets", "t", "extends: raspberry-pi-4\nbuild: {precision: int8\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("t")
    assert exc.value.message.startswith(f"{path}:3:1: YAML syntax error")


def test_missing_base_names_the_file_and_suggests(isolated_user_dirs):
    path = write(isolated_user_dirs / "targets", "t", "description: x\nextends: raspberry-pie\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("t")
    assert exc.value.message == f"{path}:2:1: extends: base profile 'raspberry-pie' not found"
    assert "raspberry-pi" in exc.value.hint


def test_extends_cycle_names_every_file(isolated_user_dirs):
    a = write(isolated_user_dirs / "targets", "a", "extends: b\n")
    b = write(isolated_user_dirs / "targets", "b", "extends: a\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("a")
    assert exc.value.message == f"extends cycle: {a} -> {b} -> {a}"


def test_missing_required_keys_are_listed_together(isolated_user_dirs):
    write(isolated_user_dirs / "targets", "t", "family: phone\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("t")
    text = problem(exc)
    for key in ("hardware", "build", "runtime"):
        assert f"{key}: required key is missing" in text


def test_name_key_must_match_the_file_name(isolated_user_dirs):
    write(isolated_user_dirs / "targets", "t", "name: other\nextends: raspberry-pi-4\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("t")
    assert "name: 'other' does not match the file name 't'" in exc.value.message


def test_builtins_ship_in_a_known_place():
    assert (builtin_dir() / "raspberry-pi-4.yaml").is_file()


def test_a_yaml_alias_bomb_is_refused_before_it_expands(isolated_user_dirs):
    import resource

    from typer.testing import CliRunner

    from edgepack.cli.app import app

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    (isolated_user_dirs / "targets").mkdir()
    (isolated_user_dirs / "targets" / "bomb.yaml").write_text("\n".join(lines) + "\nname: bomb\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for command in (["targets", "validate", "targets/bomb.yaml"], ["targets", "list"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == (2 if command[1] == "validate" else 0)  # `list` lists the valid ones, and says which is not
        assert "YAML aliases (*a0) are not allowed in a target profile" in result.output, result.output
        assert "Traceback" not in result.output
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: nothing expanded


def test_runtime_load_cache_defaults_to_auto_and_takes_off(isolated_user_dirs):
    write(isolated_user_dirs / "targets", "t", "extends: raspberry-pi-4\nruntime: {load_cache: off}\n")
    assert Catalog().load("raspberry-pi-4").profile.runtime.load_cache.value == "auto"
    assert Catalog().load("t").profile.runtime.load_cache.value == "off"


def test_bad_load_cache_value_names_the_line_and_the_choices(isolated_user_dirs):
    path = write(isolated_user_dirs / "targets", "t", "extends: raspberry-pi-4\nruntime:\n  load_cache: always\n")
    with pytest.raises(ProfileError) as exc:
        Catalog().load("t")
    assert f"{path}:3:3: runtime.load_cache: unknown value 'always'" in problem(exc)
    assert "auto" in problem(exc) and "off" in problem(exc)


def test_deeply_nested_yaml_is_refused_as_it_is_read(isolated_user_dirs):
    from typer.testing import CliRunner

    from edgepack.cli.app import app

    (isolated_user_dirs / "targets").mkdir()
    deep = "[" * 40_000 + "]" * 40_000  # 80 KB: the parser alone took minutes over it before it gave up
    (isolated_user_dirs / "targets" / "deep.yaml").write_text(f"extends: raspberry-pi-4\ndescription: {deep}\n")
    result = CliRunner().invoke(app, ["targets", "validate", "targets/deep.yaml"])
    assert result.exit_code == 2 and "deep.yaml:2:46: the YAML nests deeper than 32 levels" in result.output, result.output
    assert "a target profile needs a few levels at most" in result.output


def test_brackets_in_quotes_and_comments_are_not_nesting(isolated_user_dirs):
    (isolated_user_dirs / "targets").mkdir()
    many = "[" * 60
    (isolated_user_dirs / "targets" / "quoted.yaml").write_text(f"extends: raspberry-pi-4  # {many}\ndescription: '{many}'\n")
    assert load_target("quoted").description == many
