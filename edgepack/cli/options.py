"""Options shared by several commands, declared once so that they read and behave the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import math

import typer

from edgepack.limits import BENCH_LIMITS, MAX_THREADS, MAX_TIMEOUT_S

Db = Annotated[
    Optional[Path],
    typer.Option("--db", metavar="FILE", dir_okay=False, help="Results history database [default: history.sqlite3 in the user data directory]."),
]
Inventory = Annotated[
    Optional[Path],
    typer.Option("--inventory", metavar="FILE", dir_okay=False, help="Device inventory file [default: devices.yaml in the user config directory]."),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Devices = Annotated[
    Optional[List[str]],
    typer.Option(
        "--device", "-d",
        help="Device or device group from `edgepack devices list`; repeat to measure on several at once [default: local, this machine].",
    ),
]


def _finite(value: Optional[float]) -> Optional[float]:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a number of seconds")
    return value


# How a bench measures: each overrides the profile's `bench:` setting, within the same limits.
Runs = Annotated[Optional[int], typer.Option("--runs", min=1, max=BENCH_LIMITS["runs"], help="Timed runs [default: the profile's bench.runs].")]
Warmup = Annotated[Optional[int], typer.Option("--warmup", min=0, max=BENCH_LIMITS["warmup"], help="Untimed warm-up runs [default: the profile's].")]
Threads = Annotated[Optional[int], typer.Option("--threads", min=1, max=MAX_THREADS, help="Interpreter threads [default: the profile's runtime.threads].")]
MinSeconds = Annotated[
    Optional[float],
    typer.Option("--min-seconds", min=0.0, max=BENCH_LIMITS["min_seconds"], callback=_finite, help="Keep timing until this many seconds have passed [default: the profile's]."),
]
ColdLoads = Annotated[
    Optional[int],
    typer.Option("--cold-loads", min=0, max=BENCH_LIMITS["cold_loads"], help="Fresh-process loads with the page cache evicted [default: the profile's]."),
]
Timeout = Annotated[
    Optional[float],
    typer.Option("--timeout", metavar="S", min=1.0, max=MAX_TIMEOUT_S, callback=_finite, help="Seconds the agent may run [default: from the work asked: runs, --min-seconds, --cold-loads]."),
]

# How many devices at once, and the regression gate: `bench` and `deploy`.
MAX_CONNECTIONS = typer.Option(8, "--max-connections", min=1, help="With several devices: how many are connected and measured at once.")
BASELINE = typer.Option(None, "--baseline", metavar="RUN", help="Gate against this stored run (#12, 12, last, last~1): exit 1 when p90 latency, peak memory or model size regress.")
MAX_REGRESSION = typer.Option(None, "--max-regression", metavar="PCT", help="With --baseline: the largest allowed increase [default: 10%].")
