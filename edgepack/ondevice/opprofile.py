"""Time per operator on the device, and the nodes each provider or delegate actually ran.

ONNX Runtime: its profiler (SessionOptions.enable_profiling) writes one JSON event per node and
run ("<node>_kernel_time", cat "Node", dur in microseconds, args.op_name and args.provider); the
first run is left out (it allocates), the others are averaged per node. TFLite: LiteRT's Python
Interpreter has no per-operator timer, so where TFLite's `benchmark_model` is on the device's PATH
the agent runs it with --enable_op_profiling=true and reads its "Run Order" table; elsewhere the
report says plainly that this runtime gives no per-operator times.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile

CPU_PROVIDER = "CPUExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
OP_PROFILE_RUNS = 20  # profiled runs after the one left out
BENCHMARK_MODEL = "benchmark_model"
BENCHMARK_TIMEOUT_S = 600
# One row of benchmark_model's "Run Order" table (tensorflow/core/util/stats_calculator.cc):
# node type, first ms, avg ms, %, cdf%, mem KB, times called, [name] (newer versions add ":<node index>")
RUN_ORDER_ROW = re.compile(r"^\s*(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)\s+(\d+)\s+\[(.*)\](\S*)\s*$")
XNNPACK_NODE = "TfLiteXNNPackDelegate"


def ort_run_windows(events: list) -> list:
    """The (start, end) microsecond window of each session run, in order."""
    runs = [(e.get("ts", 0), e.get("ts", 0) + e.get("dur", 0)) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    return sorted(runs)


def ort_operator_profile(events: list) -> dict:
    """Per-node and per-op-type mean time over the profiled runs (the first left out), and each provider's share."""
    windows = ort_run_windows(events)
    skip_before = windows[0][1] if len(windows) > 1 else None  # the first run allocates: leave it out
    runs = max(len(windows) - 1, 1) if skip_before is not None else max(len(windows), 1)
    nodes = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = e.get("args") or {}
        node = nodes.setdefault(name[: -len("_kernel_time")], {"op_type": "?", "provider": "?", "us": 0.0})
        node["op_type"] = args.get("op_name") or node["op_type"]
        node["provider"] = args.get("provider") or node["provider"]
        if skip_before is None or e.get("ts", 0) >= skip_before:
            node["us"] += float(e.get("dur") or 0)
    total_ms = sum(n["us"] for n in nodes.values()) / 1000.0 / runs
    table = []
    for name, n in nodes.items():
        ms = n["us"] / 1000.0 / runs
        table.append({"name": name, "op_type": n["op_type"], "provider": n["provider"], "ms": round(ms, 6),
                      "share": round(ms / total_ms, 6) if total_ms > 0 else None})
    table.sort(key=lambda r: -r["ms"])
    providers = by_provider(table)
    accelerated = sum(p["nodes"] for name, p in providers.items() if name != CPU_PROVIDER)
    # TensorRT runs a whole subgraph as one fused node: counting nodes would read "1 of 5" for a model it
    # almost wholly runs, so no fraction is claimed there (as for a TFLite delegate's partitions).
    fused = TENSORRT_PROVIDER in providers
    return {
        "source": "onnxruntime-profiler",
        "runs": runs,
        "total_ms": round(total_ms, 6),
        "nodes": table,
        "by_op_type": by_op_type(table, total_ms),
        "by_provider": providers,
        "accelerated_fraction": round(accelerated / float(len(table)), 6) if table and set(providers) != {CPU_PROVIDER} and not fused else None,
        "method": "ONNX Runtime's profiler (enable_profiling) over %d runs after one left out: kernel time per node "
                  "after graph optimisation (fused nodes count once), mean per run; outside kernels (copies, "
                  "scheduling) not counted" % runs,
    }


def by_provider(table: list) -> dict:
    """Nodes and time per provider (ONNX Runtime) or delegate (TFLite) of a per-node TABLE."""
    providers = {}
    for row in table:
        p = providers.setdefault(row["provider"], {"nodes": 0, "ms": 0.0})
        p["nodes"] += 1
        p["ms"] = round(p["ms"] + row["ms"], 6)
    return providers


def by_op_type(table: list, total_ms: float) -> list:
    """Sum the node TABLE per op type: count, ms per run, share; slowest first."""
    grouped = {}
    for row in table:
        g = grouped.setdefault(row["op_type"], {"op_type": row["op_type"], "count": 0, "ms": 0.0})
        g["count"] += 1
        g["ms"] += row["ms"]
    rows = sorted(grouped.values(), key=lambda g: -g["ms"])
    for g in rows:
        g["ms"] = round(g["ms"], 6)
        g["share"] = round(g["ms"] / total_ms, 6) if total_ms > 0 else None
    return rows


def profiled_events(make_session, feed, output_names, runs: int) -> list:
    """Run a profiling session (MAKE_SESSION(prefix) -> session) RUNS times; return its profile's events.

    The profile goes to a private temporary folder, removed afterwards: never next to the bundle,
    never in the working directory, and nothing is left where the session fails half-way.
    """
    folder = tempfile.mkdtemp(prefix="edgepack-ort-profile-")
    try:
        session = make_session(os.path.join(folder, "profile"))
        for _ in range(runs):
            session.run(output_names, feed)
        with open(session.end_profiling(), "r", encoding="utf-8") as f:
            events = json.load(f)
        del session
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return events if isinstance(events, list) else []


def profile_ort_session(make_session, feed, output_names, runs: int = OP_PROFILE_RUNS) -> dict:
    """Run a profiling session RUNS + 1 times (the first is the warm-up) and read its profile."""
    return ort_operator_profile(profiled_events(make_session, feed, output_names, runs + 1))


def parse_benchmark_model(text: str) -> dict:
    """Read benchmark_model's --enable_op_profiling output: its "Run Order" table, per node and per op type."""
    table, section = [], None
    for line in text.splitlines():
        if line.startswith("=") and "Run Order" in line:
            section = "run-order"
            continue
        if line.startswith("="):
            section = None
            continue
        m = RUN_ORDER_ROW.match(line) if section == "run-order" else None
        if m:
            kind = m.group(1)
            delegate = "xnnpack" if XNNPACK_NODE in kind else ("gpu" if "Gpu" in kind or "GPU" in kind else None)
            table.append({"name": m.group(8) + m.group(9), "op_type": kind, "provider": delegate or "cpu", "ms": float(m.group(3)),
                          "share": float(m.group(4)) / 100.0})
    total = sum(r["ms"] for r in table)
    table.sort(key=lambda r: -r["ms"])
    providers = by_provider(table)
    return {
        "source": "benchmark_model",
        "runs": None,
        "total_ms": round(total, 6),
        "nodes": table,
        "by_op_type": by_op_type(table, total),
        "by_provider": providers,
        "accelerated_fraction": None,  # a delegate shows as one node per partition: ops inside it are not listed
        "method": "TFLite benchmark_model --enable_op_profiling=true: average ms per node (a delegate's partition is one node)",
    }


def benchmark_model_command(binary: str, model_path: str, threads, delegates: list, runs: int = OP_PROFILE_RUNS) -> list:
    """The benchmark_model command that profiles MODEL_PATH with the bench's threads and delegates."""
    cmd = [binary, "--graph=%s" % model_path, "--enable_op_profiling=true", "--num_runs=%d" % runs, "--warmup_runs=1"]
    if threads:
        cmd.append("--num_threads=%d" % threads)
    cmd.append("--use_xnnpack=%s" % ("true" if "xnnpack" in delegates else "false"))
    if "gpu" in delegates:
        cmd.append("--use_gpu=true")
    return cmd


def profile_tflite(model_path: str, threads, delegates: list, path_env=None) -> dict:
    """Per-operator times of a TFLite model from benchmark_model where it is on PATH; else say there are none."""
    binary = shutil.which(BENCHMARK_MODEL, path=path_env)
    if binary is None:
        return {"source": None, "nodes": [], "by_op_type": [], "by_provider": {},
                "unavailable": "no per-operator times: LiteRT's Python interpreter has no op profiler and TFLite's "
                               "benchmark_model is not on the device's PATH (put it there for --enable_op_profiling)"}
    try:
        done = subprocess.run(benchmark_model_command(binary, model_path, threads, delegates), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=BENCHMARK_TIMEOUT_S, universal_newlines=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"source": "benchmark_model", "nodes": [], "by_op_type": [], "by_provider": {},
                "unavailable": "benchmark_model did not finish: %s" % exc}
    found = parse_benchmark_model(done.stdout)
    if not found["nodes"]:
        tail = done.stdout.strip().splitlines()[-1:] or ["no output"]
        found["unavailable"] = "benchmark_model (exit %d) printed no per-operator table: %s" % (done.returncode, tail[0])
    return found
