"""Every test runs in its own working directory with its own user config, cache and data dirs."""

from __future__ import annotations

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
