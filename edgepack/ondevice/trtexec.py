"""trtexec: find it, run it, and read its output into figures."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from .agentbase import AgentFailure, TRTEXEC_PATHS, TRTEXEC_TIMEOUT_S
from .common import np


def find_trtexec():
    """Return the path of trtexec, on PATH or where JetPack installs it, or None."""
    found = shutil.which("trtexec")
    if found:
        return found
    for path in TRTEXEC_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def trt_version(code: int) -> str:
    """Turn trtexec's banner code into a version: 8601 -> 8.6.1, 100300 -> 10.3.0."""
    if code >= 10000:
        return "%d.%d.%d" % (code // 10000, (code // 100) % 100, code % 100)
    return "%d.%d.%d" % (code // 1000, (code // 100) % 10, code % 100)


_TRT_STATS = {
    "Latency": "latency_ms",
    "Enqueue Time": "enqueue_ms",
    "H2D Latency": "h2d_ms",
    "GPU Compute Time": "gpu_compute_ms",
    "D2H Latency": "d2h_ms",
}


_TRT_LINE = re.compile(r"^(?:\[[^\]]*\]\s*)*?\[([IWEVF])\]\s?(.*)$")


def _trt_stats(text: str) -> dict:
    """Parse "min = 0.07 ms, max = 0.41 ms, mean = ..., median = ..., percentile(90%) = ... ms, ..."."""
    result = {"min": None, "max": None, "mean": None, "median": None, "percentiles": {}}
    for key, value in re.findall(r"(min|max|mean|median|percentile\(\d+(?:\.\d+)?%\))\s*=\s*([-\d.eE+]+)\s*ms", text):
        if key.startswith("percentile"):
            result["percentiles"][key[len("percentile("):-2]] = float(value)
        else:
            result[key] = float(value)
    for pct, value in re.findall(r"percentile:\s*(\d+(?:\.\d+)?)%\s*=\s*([-\d.eE+]+)\s*ms", text):  # TensorRT < 8.4
        result["percentiles"][pct] = float(value)
    return result


def parse_trtexec(text: str) -> dict:
    """Turn trtexec's output into figures: version, engine build and load times, throughput, and
    the performance summary's statistics (ms), each as trtexec itself computed them.

    A pure function of the text, so that it can be tested against real trtexec output.
    """
    figures = {
        "tensorrt_version": None, "device": None, "precision": None, "passed": None,
        "engine_build_s": None, "engine_load_ms": None, "throughput_qps": None,
        "latency_ms": None, "enqueue_ms": None, "h2d_ms": None, "gpu_compute_ms": None, "d2h_ms": None,
        "warmup_queries": None, "queries": None, "trace_s": None, "host_walltime_s": None, "gpu_compute_total_s": None,
        "warnings": [], "errors": [],
    }
    in_summary = False
    for raw in text.splitlines():
        line = raw.strip()
        banner = re.match(r"&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec \[TensorRT v(\d+)\]", line)
        if banner:
            figures["tensorrt_version"] = figures["tensorrt_version"] or trt_version(int(banner.group(2)))
            if banner.group(1) != "RUNNING":
                figures["passed"] = banner.group(1) == "PASSED"
            continue
        m = _TRT_LINE.match(line)
        if not m:
            continue
        level, body = m.group(1), m.group(2).strip()
        if level in ("E", "F"):
            body = re.sub(r"^\[TRT\]\s*", "", body)
            if body and body not in figures["errors"]:
                figures["errors"].append(body)
            continue
        if level == "W":
            if in_summary and body.lstrip("* ").strip():
                figures["warnings"].append(body.lstrip("* ").strip())
            continue
        if body == "=== Performance summary ===":
            in_summary = True
            continue
        if body.startswith("=== "):
            in_summary = False
        found = re.match(r"TensorRT version:\s*(\d+(?:\.\d+)+)", body)
        if found:
            figures["tensorrt_version"] = found.group(1)
            continue
        found = re.match(r"Selected Device:\s*(.+)", body)
        if found and figures["device"] is None:
            figures["device"] = found.group(1).strip()
            continue
        found = re.match(r"Precision:\s*(\S+)", body)
        if found and figures["precision"] is None:
            figures["precision"] = found.group(1)
            continue
        found = re.match(r"Engine built in ([\d.eE+-]+) sec", body)
        if found:
            figures["engine_build_s"] = float(found.group(1))
            continue
        found = re.match(r"Engine deserialized in ([\d.eE+-]+) sec", body)
        if found:
            figures["engine_load_ms"] = float(found.group(1)) * 1000.0
            continue
        found = re.match(r"Warmup completed (\d+) queries over", body)
        if found:
            figures["warmup_queries"] = int(found.group(1))
            continue
        found = re.match(r"Timing trace has (\d+) queries over ([\d.eE+-]+) s", body)
        if found:
            figures["queries"], figures["trace_s"] = int(found.group(1)), float(found.group(2))
            continue
        found = re.match(r"Throughput:\s*([\d.eE+-]+) qps", body)
        if found:
            figures["throughput_qps"] = float(found.group(1))
            continue
        found = re.match(r"Total Host Walltime:\s*([\d.eE+-]+) s", body)
        if found:
            figures["host_walltime_s"] = float(found.group(1))
            continue
        found = re.match(r"Total GPU Compute Time:\s*([\d.eE+-]+) s", body)
        if found:
            figures["gpu_compute_total_s"] = float(found.group(1))
            continue
        name, sep, rest = body.partition(":")
        if sep and name in _TRT_STATS and "=" in rest:
            figures[_TRT_STATS[name]] = _trt_stats(rest)
    return figures


def run_trtexec(cmd: list, timeout: float):
    """Run trtexec; return (exit status, stdout and stderr together)."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AgentFailure("trtexec took longer than %d s: %s" % (timeout, " ".join(cmd[:2])))
    except OSError as exc:
        raise AgentFailure("cannot run trtexec: %s" % exc)
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def trt_name(name: str) -> str:
    """A tensor name as trtexec's --shapes / --loadInputs take it: quoted where it holds a colon."""
    return "'%s'" % name if ":" in name or "," in name else name


class TrtexecRunner:
    """Run a built engine once per call through trtexec (--loadInputs / --exportOutput): the
    reference check, without TensorRT's Python bindings."""

    def __init__(self, trtexec, engine_path, shape_args, workdir):
        self.cmd = [trtexec, "--loadEngine=" + engine_path, "--iterations=1", "--duration=0", "--warmUp=0"] + shape_args
        self.workdir = workdir
        self.calls = 0

    def bind(self, specs, arrays):
        return list(zip(specs, arrays))

    def infer(self, bound, out_specs) -> list:
        self.calls += 1
        loads = []
        for k, (spec, array) in enumerate(bound):
            path = os.path.join(self.workdir, "check_in_%d_%d.bin" % (self.calls, k))
            np.ascontiguousarray(array, dtype=spec.dtype).tofile(path)
            loads.append("%s:%s" % (trt_name(spec.name), path))
        out_path = os.path.join(self.workdir, "check_out_%d.json" % self.calls)
        status, text = run_trtexec(self.cmd + ["--loadInputs=" + ",".join(loads), "--exportOutput=" + out_path], TRTEXEC_TIMEOUT_S)
        if status != 0 or not os.path.isfile(out_path):
            errors = parse_trtexec(text)["errors"]
            raise AgentFailure("trtexec could not run the reference inputs: %s" % (errors[0] if errors else "exit status %d" % status))
        with open(out_path, "r", encoding="utf-8") as f:
            exported = dict((o.get("name"), o) for o in json.load(f))
        results = []
        for spec in out_specs:
            out = exported.get(spec.name)
            if out is None:
                raise AgentFailure("trtexec exported no output named %s" % spec.name)
            dims = [int(d) for d in str(out.get("dimensions", "")).split("x") if d.strip()]
            values = np.asarray(out["values"], dtype=np.float64).reshape(dims or [-1])
            results.append(values.astype(spec.dtype) if spec.dtype.kind in "iu" else values)  # integers: dequantized by the check
        return results
