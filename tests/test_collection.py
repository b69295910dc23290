"""Every test file is collected by the suite's own configuration, so none can be skipped silently.

pytest's default `norecursedirs` skips folders named `build`, `dist`, `venv` and more; a test
folder with such a name (or a file pytest does not match) would simply never run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def collected_files(*args: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return {line.split("::")[0] for line in out.stdout.splitlines() if "::" in line}


def test_every_test_file_is_collected():
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / "tests").rglob("test_*.py")}
    assert on_disk, "no test files found"
    missing = on_disk - collected_files()
    assert not missing, f"test files the suite never runs: {sorted(missing)}"

