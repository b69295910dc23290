#!/usr/bin/env python
"""Benchmark `edgepack tune`: how many trials TPE and random search need to find what the full grid finds.

For the digits CNN and a wider one (4x the filters, about 16x the weights), over one small search
space on the raspberry-pi-4 target (precision fp32/fp16/int8 x sparsity 0/0.5/0.75 x channels
0/0.25/0.5, the default budgets), on the `local` device:

1. the full grid: every point built and benched for real (`edgepack.tune`, sampler grid);
2. TPE and random search replayed against the grid's measurements, over many seeds: the trials
   each needs until it has measured a point within 5% of the grid's best p90 that meets every
   budget (a real search would measure the same builds again; replaying keeps the comparison
   free of bench noise and affordable over many seeds). Aim: TPE within 1/3 of the grid;
3. the chosen build against the target's default build, benched one after the other in this run:
   p90, size and accuracy.

    .venv/bin/python scripts/bench_tune.py [--quick] [--seeds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPACE = "tune: {precision: [fp32, fp16, int8], sparsity: [0.0, 0.5, 0.75], channels: [0.0, 0.25, 0.5], calibration_samples: [200]}"
NEAR = 1.05  # within 5% of the grid's best p90: what bench noise cannot tell apart
CAP = 200  # asks before a search counts as never finding it


def replay(kind: str, seed: int, grid: dict, space: dict, best_p90: float) -> tuple[int, int]:
    """Trials the sampler KIND (seeded) asks, and distinct builds it measures, until it has a feasible point within NEAR of BEST_P90.

    A trial whose settings were measured before costs nothing in a real study (the same build,
    not benched again): the distinct builds are what a search costs. (CAP, CAP) if never found.
    """
    import optuna

    from edgepack.tuning.study import make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=make_sampler(kind, seed=seed))
    seen = set()
    for n in range(1, CAP + 1):
        trial = study.ask()
        params = tuple(trial.suggest_categorical(k, v) for k, v in space.items())
        seen.add(params)
        p90, size, feasible = grid[params]
        trial.set_constraint("budgets", 0.0 if feasible else 1.0)
        study.tell(trial, [p90, size])
        if feasible and p90 <= best_p90 * NEAR:
            return n, len(seen)
    return CAP, CAP


def one_model(name: str, width: int, seeds: int, options) -> list[str]:
    import numpy as np

    from edgepack import bench, build, tune
    from edgepack.examples import digits_cnn, digits_data
    from edgepack.quiet import quiet

    lines = []
    x, y = digits_data()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        with quiet():
            digits_cnn(x[:1200], y[:1200], width=width).save("model.keras")
        np.savez("data.npz", x=x[1200:], y=y[1200:])
        Path("targets").mkdir()
        Path("targets/pi.yaml").write_text(f"extends: raspberry-pi-4\n{SPACE}\n")
        result = tune(Path("model.keras"), "pi", Path("data.npz"), trials=100, sampler="grid", options=options, study_name=f"bench-{name}-{os.getpid()}")
        from edgepack.profile.store import load_target
        from edgepack.tuning.space import search_space

        space = search_space(load_target("pi"))
        grid = {}
        for t in result.trials:
            v = t.values
            feasible = t.state == "complete" and t.meets_budgets
            grid[tuple(t.params[k] for k in space)] = (v.get("p90_ms") or float("inf"), v.get("size_kb") or float("inf"), feasible)
        best = result.chosen
        lines.append(f"## {name}: grid of {len(grid)} points, {sum(f for *_, f in grid.values())} meet every budget")
        lines.append(f"grid best: trial {best.number} {best.params} p90 {best.values['p90_ms']:.4f} ms, {best.values['size_kb']:.1f} KB")
        lines.append("| search | trials asked (median, p90 over seeds) | distinct builds measured (median, p90) | builds as a share of the grid |")
        lines.append("|---|---|---|---|")
        for kind in ("tpe", "random", "nsga2"):
            runs = [replay(kind, s, grid, space, best.values["p90_ms"]) for s in range(seeds)]
            asked, built = sorted(a for a, _ in runs), sorted(b for _, b in runs)
            q = int(0.9 * (len(runs) - 1))
            lines.append(f"| {kind} | {statistics.median(asked):g}, {asked[q]} | {statistics.median(built):g}, {built[q]} | "
                         f"{statistics.median(built) / len(grid):.2f} |")
        lines.append(f"| grid | {len(grid)} | {len(grid)} | 1.00 |")
        default = build(Path("model.keras"), "raspberry-pi-4", Path("data.npz"), out=Path("default"))
        lines.append("| build | p90 ms | size KB | accuracy |")
        lines.append("|---|---|---|---|")
        for label, bundle, accuracy in (
            ("raspberry-pi-4 default (" + default.manifest.precision.value + ")", default.bundle, default.manifest.fidelity.accuracy_artifact),
            (f"tuned (trial {best.number})", Path(best.bundle), best.values.get("accuracy")),
        ):
            measured = bench(bundle, "local", options, store=False)
            size = next(f.bytes for f in measured.manifest.files if f.path == measured.manifest.artifact) / 1024
            acc = f"{100 * accuracy:.2f}%" if accuracy is not None else "-"
            lines.append(f"| {label} | {measured.report.latency_ms.p90:.4f} | {size:.1f} | {acc} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the digits CNN only, 10 seeds")
    parser.add_argument("--seeds", type=int, default=30)
    args = parser.parse_args()
    from edgepack.benchmark import BenchOptions

    os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp(prefix="edgepack-bench-tune-"))  # studies and history apart from the user's
    options = BenchOptions(runs=200, warmup=20, min_seconds=0.5, cold_loads=0)
    models = [("digits CNN", 16)] if args.quick else [("digits CNN", 16), ("wide digits CNN", 64)]
    for name, width in models:
        print("\n".join(one_model(name, width, 10 if args.quick else args.seeds, options)) + "\n", flush=True)


if __name__ == "__main__":
    main()
