#!/usr/bin/env python
"""Benchmark how fast `edgepack` starts, against a minimal two-command typer app, in one run.

Each command runs in a fresh process with this Python (`python -c` running the console script's
entry point, so the figures leave out the shell wrapper that both would pay alike); the median
of RUNS wall times is reported, with the ratio edgepack / minimal app, and which heavy modules
each start imported.

    .venv/bin/python scripts/bench_cli_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MINIMAL_APP = '''
import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def hello(name: str = "world") -> None:
    """Say hello."""
    print(f"hello {name}")


@app.command()
def bye() -> None:
    """Say goodbye."""
    print("bye")
'''
HEAVY = ("numpy", "pydantic", "ruamel.yaml", "paramiko", "tensorflow", "onnxruntime", "edgepack.benchmark", "edgepack.builder.pipeline")
RUN_EDGEPACK = "import sys; sys.argv[0] = 'edgepack'; from edgepack.cli.app import main; main()"
RUN_MINIMAL = "import sys; sys.path.insert(0, {dir!r}); sys.argv[0] = 'minimal'; from minimal_app import app; app()"


def median_ms(code: str, args: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def imported(code: str, args: list[str]) -> list[str]:
    probe = f"import atexit, sys, os\natexit.register(lambda: os.write(2, ('MODULES ' + ' '.join(sorted(sys.modules))).encode()))\n{code}"
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
    line = next((x for x in out.stderr.splitlines() if x.startswith("MODULES ")), "MODULES ")
    modules = set(line.split()[1:])
    return [name for name in HEAVY if name in modules]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "minimal_app.py").write_text(MINIMAL_APP)
        minimal = RUN_MINIMAL.format(dir=tmp)
        for code in (RUN_EDGEPACK, minimal):  # warm the file system cache and bytecode once
            subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True)
        rows = {}
        for label, argv in (("--help", ["--help"]), ("--version", ["--version"])):
            ours = median_ms(RUN_EDGEPACK, argv, args.runs)
            theirs = median_ms(minimal, ["--help"], args.runs)
            rows[label] = {
                "edgepack_ms": round(ours, 1),
                "minimal_typer_app_ms": round(theirs, 1),
                "ratio": round(ours / theirs, 2),
                "edgepack_imports": imported(RUN_EDGEPACK, argv),
                "minimal_imports": imported(minimal, ["--help"]),
            }
    print(f"{'command':<12}{'edgepack ms':>14}{'minimal app ms':>16}{'ratio':>8}  heavy modules imported by edgepack")
    for label, row in rows.items():
        print(f"{label:<12}{row['edgepack_ms']:>14.1f}{row['minimal_typer_app_ms']:>16.1f}{row['ratio']:>8.2f}  {', '.join(row['edgepack_imports']) or 'none'}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
