"""The wheel carries the built-in profiles and the agent: an installed edgepack needs no source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_an_installed_wheel_finds_the_builtin_profiles(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("edgepack-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {Path(n).name for n in names if n.startswith("edgepack/_builtin_targets/")}
    assert shipped == {p.name for p in (REPO / "targets").glob("*.yaml")}
    assert "edgepack/ondevice/cli.py" in names and "edgepack/ondevice/loader.py" in names  # the agent and the loader are assembled from them
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "from edgepack.profile.store import Catalog, builtin_dir; print(builtin_dir()); print(len(Catalog().sources()))"
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == str(site / "edgepack" / "_builtin_targets") and int(out[1]) == len(shipped)
