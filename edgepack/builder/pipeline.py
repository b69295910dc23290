"""The build: make the plan, then run its stages in order — with a cache in front."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from edgepack.agent.assemble import loader_file
from edgepack.builder import cache
from edgepack.builder.package import tool_versions
from edgepack.builder.plan import Plan, plan_build
from edgepack.builder.steps import BuildState
from edgepack.bundle import Manifest, read_manifest, sha256_file
from edgepack.profile.store import Catalog
from edgepack.quiet import quiet

# Called as on_stage(name, detail, seconds): seconds is None when the stage starts, and when a
# running stage says what it is doing now (the detail); each stage of the plan ends exactly once.
# The detail is a `Step`: a str that also carries its figures (epoch k of n, attempt k of n).
OnStage = Callable[[str, str, Optional[float]], None]


class Step(str):
    """What a running stage does now: the text shown, and the data behind it for whoever renders it.

    KIND names the kind of step ("epoch", "attempt"; "" for a plain detail), K of N counts it
    (N None where the total is not known up front), and FIGURES holds its numbers by name
    (an epoch's "loss" and "val_loss", an attempt's "tries" and the last attempt's "last").
    """

    kind: str
    k: Optional[int]
    n: Optional[int]
    figures: dict

    def __new__(cls, text: str, kind: str = "", k: Optional[int] = None, n: Optional[int] = None, **figures) -> "Step":
        step = super().__new__(cls, text)
        step.kind, step.k, step.n, step.figures = kind, k, n, figures
        return step


@dataclass
class BuildResult:
    bundle: Path
    manifest: Manifest
    cached: bool
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.manifest.passed

    @property
    def failures(self) -> list[str]:
        return list(self.manifest.fidelity.failures)

    @property
    def size_bytes(self) -> int:
        return next(f.bytes for f in self.manifest.files if f.path == self.manifest.artifact)


def build(
    model: Path,
    target: str,
    data: Path | None = None,
    eval_data: Path | None = None,
    out: Path | None = None,
    use_cache: bool = True,
    synthetic_calibration: bool = False,
    on_stage: OnStage | None = None,
    catalog: Catalog | None = None,
    explain: bool = False,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    train_data: Path | None = None,
) -> BuildResult:
    """Build MODEL for TARGET into a bundle directory.

    A build that misses a budget still writes its bundle (status "failed") for inspection; the
    result says so, and the caller decides the exit code. INPUT_SHAPES (input name, or "" for
    the only input -> dimensions) fixes dynamic dimensions of an ONNX build (`--input-shape`).

    Raises:
        EdgepackError: bad input of any kind, before anything is written.
    """
    plan = plan_build(Path(model), target, data, eval_data, out, synthetic_calibration, input_shapes, train_data, catalog, explain)
    return run_planned(plan, use_cache, on_stage)


def run_planned(plan: Plan, use_cache: bool = True, on_stage: OnStage | None = None) -> BuildResult:
    """Build what PLAN (from `plan_build`) says: from the cache where an identical build is there, else stage by stage."""
    report = on_stage or (lambda *_: None)
    tools = tool_versions()
    key = cache_key(plan, tools) if use_cache else None
    if key and cache.lookup(key) and not plan.explain:  # a cached build has no per-layer table to show
        detail = "hit: an identical build is cached"
        report("cache", detail, None)
        start = time.perf_counter()
        with quiet():
            cache.restore(key, plan.out)
        seconds = time.perf_counter() - start
        report("cache", detail, seconds)
        return BuildResult(plan.out, read_manifest(plan.out), cached=True, stage_seconds={"cache": seconds})
    state = BuildState(plan, tools, key)
    timings = run_plan(plan, state, report)
    return BuildResult(plan.out, state.manifest, cached=False, stage_seconds=timings)


def run_plan(plan: Plan, state: BuildState, report: OnStage) -> dict[str, float]:
    """Run the plan's stages in order on STATE, reporting each; return each stage's seconds."""
    timings: dict[str, float] = {}
    for stage in plan.stages:

        def progress(detail: str, name: str = stage.name, **data) -> None:
            with aloud(heard):
                report(name, Step(detail, **data), None)

        state.progress = progress
        report(stage.name, Step(stage.detail), None)
        heard = sys.stdout, sys.stderr, os.dup(1), os.dup(2)
        start = time.perf_counter()
        try:
            with quiet():
                stage.run(state)
        finally:
            os.close(heard[2])
            os.close(heard[3])
        timings[stage.name] = time.perf_counter() - start
        report(stage.name, Step(stage.detail), timings[stage.name])
    return timings


@contextmanager
def aloud(heard):
    """Let the body print inside `quiet()`: to HEARD, the streams and file descriptors from before it."""
    stdout, stderr, fd1, fd2 = heard
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    hushed = sys.stdout, sys.stderr, os.dup(1), os.dup(2)
    os.dup2(fd1, 1)
    os.dup2(fd2, 2)
    sys.stdout, sys.stderr = stdout, stderr
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = hushed[0], hushed[1]
        os.dup2(hushed[2], 1)
        os.dup2(hushed[3], 2)
        os.close(hushed[2])
        os.close(hushed[3])


def cache_key(plan: Plan, tools: dict[str, str]) -> str:
    """The cache key of PLAN's build: the model's and the data's bytes, the resolved profile, the loader, the tools."""
    from edgepack.model.source import sha256_path

    data_sha = ":".join(sha256_path(Path(p)) if p else "-" for p in (plan.data, plan.eval_data, plan.train_data))
    # The whole resolved profile, not just `build`: the manifest carries it, and `bench` reads
    # its bench settings and budgets from there, so a changed budget must not hit an old entry.
    settings = {"profile": plan.profile.model_dump(mode="json"), "synthetic": plan.synthetic_calibration}
    # A cached bundle carries the loader for apps as it was: a changed loader is a new build.
    settings["loader_sha256"] = sha256_file(loader_file())
    if plan.input_shapes:
        settings["input_shapes"] = {k: list(v) for k, v in plan.input_shapes.items()}
    return cache.cache_key(sha256_path(plan.model), data_sha, settings, tools)
