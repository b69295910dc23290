"""`edgepack deploy`: build a model for each target (cached) and measure it on a device, or on several at once.

Exit codes as `edgepack bench` (`edgepack.cli.bench`): 2 when a build or a device failed, else 1
when a budget or the regression gate failed, else 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgepack.cli.bench import Progress, bench_options, render_deployment
from edgepack.cli.options import (
    BASELINE,
    MAX_CONNECTIONS,
    MAX_REGRESSION,
    ColdLoads,
    Db,
    Devices,
    Inventory,
    Json,
    MinSeconds,
    Runs,
    Threads,
    Timeout,
    Warmup,
)


def deploy_command(
    model: Path = typer.Argument(..., help="Keras .keras/.h5 file, SavedModel directory, .onnx file, PyTorch .pt2 file or pkg.module:factory."),
    targets: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Target profile; repeat to compare targets [default: each device's target]."),
    devices: Devices = None,
    data: Optional[Path] = typer.Option(None, "--data", help="Calibration/evaluation data: .npz (x, y), .npy or an image folder."),
    runs: Runs = None,
    warmup: Warmup = None,
    threads: Threads = None,
    min_seconds: MinSeconds = None,
    cold_loads: ColdLoads = None,
    timeout: Timeout = None,
    inventory: Inventory = None,
    max_connections: int = MAX_CONNECTIONS,
    db: Db = None,
    baseline: Optional[str] = BASELINE,
    max_regression: Optional[str] = MAX_REGRESSION,
    as_json: Json = False,
) -> None:
    """Build MODEL for each target (using the build cache) and measure it on a device, or on several at once."""
    from edgepack.cli.build import show_stage
    from edgepack.deployment import deploy

    progress = Progress(as_json, max_connections=max_connections)
    try:
        deployment = deploy(
            model, targets, devices, data, bench_options(runs, warmup, threads, min_seconds, cold_loads, timeout), inventory, db, baseline,
            max_regression, max_connections, on_stage=None if as_json else show_stage, on_part=progress.part,
            on_step=progress.step, on_change=progress.change,
        )
    finally:
        progress.close()
    render_deployment(deployment, as_json)
