"""`set` and `new`: edits keep comments and key order, and invalid edits write nothing."""

from __future__ import annotations

import pytest

from edgepack.errors import ProfileError
from edgepack.profile.edit import new_profile, parse_assignment, set_values
from edgepack.profile.store import Catalog

USER_PROFILE = """\
# My board, tuned by hand.
name: my-pi
extends: raspberry-pi-4  # the 4 GB model
description: bench board
build:
  precision: int8   # int8 is fastest here
  calibration_samples: 100
budgets: {max_p90_latency_ms: 50}
"""


@pytest.fixture
def my_pi(isolated_user_dirs):
    path = isolated_user_dirs / "targets" / "my-pi.yaml"
    path.parent.mkdir()
    path.write_text(USER_PROFILE)
    return path


def test_set_keeps_comments_and_key_order(my_pi):
    loaded = set_values(Catalog(), "my-pi", ["build.precision=fp16", "budgets.max_p90_latency_ms=20", "runtime.threads=2"])
    text = my_pi.read_text()
    assert "# My board, tuned by hand." in text and "# the 4 GB model" in text and "# int8 is fastest here" in text
    assert "precision: fp16" in text and "calibration_samples: 100" in text
    keys = [line.split(":")[0] for line in text.splitlines() if line and line[0].isalpha()]
    assert keys == ["name", "extends", "description", "build", "budgets", "runtime"]
    assert loaded.profile.budgets.max_p90_latency_ms == 20 and loaded.profile.runtime.threads == 2
    assert Catalog().load("my-pi").profile.build.precision.value == "fp16"


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("build.precision=int4", "unknown value 'int4' (did you mean 'int8'?)"),
        ("build.precison=fp16", "unknown key 'precison' (did you mean 'precision'?)"),
        ("build.io_dtype=uint8", None),  # valid: int8 precision with uint8 io
        ("runtime.threads=-1", "runtime.threads"),
    ],
)
def test_set_refuses_an_invalid_result_without_touching_the_file(my_pi, assignment, expected):
    if expected is None:
        set_values(Catalog(), "my-pi", [assignment])
        assert "io_dtype: uint8" in my_pi.read_text()
        return
    with pytest.raises(ProfileError) as exc:
        set_values(Catalog(), "my-pi", [assignment])
    assert expected in "\n".join([exc.value.message, *exc.value.details])
    assert "was not changed" in exc.value.hint
    assert my_pi.read_text() == USER_PROFILE
    assert [p.name for p in my_pi.parent.iterdir()] == ["my-pi.yaml"]  # no temporary file left


def test_set_refuses_to_edit_a_builtin():
    with pytest.raises(ProfileError) as exc:
        set_values(Catalog(), "raspberry-pi-4", ["build.precision=fp16"])
    assert "built-in" in exc.value.message and "targets new" in exc.value.hint


def test_assignment_values_are_typed_as_yaml():
    assert parse_assignment("runtime.delegates=[gpu, xnnpack]") == (("runtime", "delegates"), ["gpu", "xnnpack"])
    assert parse_assignment("budgets.max_model_kb=512") == (("budgets", "max_model_kb"), 512)
    with pytest.raises(ProfileError):
        parse_assignment("build.precision")


def test_new_writes_a_commented_profile_that_extends_its_base(isolated_user_dirs):
    path = new_profile(Catalog(), "lab-pi", "raspberry-pi-5", isolated_user_dirs / "targets")
    text = path.read_text()
    assert text.startswith("# lab-pi: a target profile that extends raspberry-pi-5.")
    assert "extends: raspberry-pi-5" in text and "#   precision: int8" in text
    p = Catalog().load("lab-pi").profile
    assert p.hardware.cpu == "cortex-a76" and p.name == "lab-pi"


def test_new_refuses_to_overwrite(my_pi):
    with pytest.raises(ProfileError) as exc:
        new_profile(Catalog(), "my-pi", "raspberry-pi-5", my_pi.parent)
    assert "already exists" in exc.value.message
    assert my_pi.read_text() == USER_PROFILE


def test_new_refuses_an_unknown_base(isolated_user_dirs):
    with pytest.raises(ProfileError) as exc:
        new_profile(Catalog(), "x", "jetson-orin-nan", isolated_user_dirs / "targets")
    assert "jetson-orin-nano" in exc.value.hint
    assert not (isolated_user_dirs / "targets" / "x.yaml").exists()


@pytest.mark.parametrize("base", sorted(Catalog().sources()))
def test_new_from_every_builtin_gives_a_valid_profile(isolated_user_dirs, base):
    new_profile(Catalog(), "mine", base, isolated_user_dirs / "targets")
    assert Catalog().load("mine").profile.family == Catalog().load(base).profile.family
