"""Every test runs in its own working directory with its own user config, cache and data dirs."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path, monkeypatch):
    home = tmp_path / "home"
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"), ("XDG_DATA_HOME", "data")):
        (home / sub).mkdir(parents=True)
        monkeypatch.setenv(var, str(home / sub))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("EDGEPACK_DEBUG", raising=False)
    return work


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits: x float32 (1797, 8, 8, 1) in 0..1, y int labels."""
    from edgepack.examples import digits_data

    return digits_data()


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory, digits):
    """The digits CNN (.keras), trained on the first 1200 digits, and the other 597 as data."""
    from edgepack.examples import digits_cnn

    x, y = digits
    d = tmp_path_factory.mktemp("digits")
    digits_cnn(x[:1200], y[:1200], epochs=12).save(d / "cnn.keras")
    np.savez(d / "digits.npz", x=x[1200:], y=y[1200:])
    return d / "cnn.keras", d / "digits.npz"


@pytest.fixture(scope="session")
def digits_bundles(tmp_path_factory, digits_files):
    """Bundles of the digits CNN for every TFLite precision: {"fp32": path, "fp16": ..., ...}."""
    from edgepack.builder.pipeline import build
    from edgepack.profile.store import Catalog, SearchDir, builtin_dir

    model, data = digits_files
    root = tmp_path_factory.mktemp("bundles")
    targets = root / "targets"
    targets.mkdir()
    bundles = {}
    for precision in ("fp32", "fp16", "dynamic-int8", "int8"):
        name = f"pi-{precision}"
        (targets / f"{name}.yaml").write_text(f"extends: raspberry-pi-4\nbuild: {{precision: {precision}}}\n")
        catalog = Catalog([SearchDir("project", targets), SearchDir("builtin", builtin_dir())])
        result = build(model, name, data=data, out=root / name, use_cache=False, catalog=catalog)
        bundles[precision] = result.bundle
    return bundles


def write_target(work, name: str, text: str) -> str:
    """Write ./targets/NAME.yaml in the test's working directory; return NAME."""
    targets = work / "targets"
    targets.mkdir(exist_ok=True)
    (targets / f"{name}.yaml").write_text(text)
    return name


def build_fails_cleanly(args: list[str], expected: str):
    """Run `edgepack build ARGS` in the test's working directory and check that it failed as a user
    should see it: exit 2, EXPECTED in the output, no traceback, and no bundle left behind."""
    from pathlib import Path

    from typer.testing import CliRunner

    from edgepack.cli.app import app

    result = CliRunner().invoke(app, ["build", *args])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert not Path("build").exists() or not any(Path("build").iterdir())
    return result
