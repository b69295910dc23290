"""Measure a bundle on this device and print one JSON report.

This file is pushed to the device and run with the device's own Python (3.8 or newer). It
needs only the standard library, numpy and whichever runtime is installed; it never imports
the rest of edgepack (it is assembled from edgepack/ondevice/ into one file). The host validates the report with ``edgepack.agent.protocol``: keep the two in sync.

Usage:
    python edgepack_agent.py BUNDLE_DIR [--runs N] [--warmup N] [--min-seconds S]
        [--cold-loads N] [--threads N] [--engine tflite|onnxruntime|tensorrt]
        [--delegates a,b] [--providers A,B] [--cache-dir DIR]
        [--load-cache auto|off] [--load-cache-dir DIR]

``--engine tensorrt`` builds a TensorRT engine from the .onnx artifact with trtexec (cached in
--cache-dir by the model's sha256 and the TensorRT version, with a timing cache beside it) and
reports trtexec's own figures; without trtexec on the device it measures with ONNX Runtime
instead, with a note.

Load time: every load is timed in a fresh process (cold: the files evicted from the page cache),
with its phases (``load.phases_ms``). With ``--load-cache auto`` the agent also makes the
runtime's load-optimised form of the model in --load-cache-dir (default ``load-cache`` beside the
bundle, in the device workdir): ONNX Runtime's graph optimised once here and saved (as ONNX with
its weights in a file it maps, or in ORT format, whichever loads faster), or LiteRT's XNNPACK
weight cache. An entry is keyed by the model's sha256 and the runtime's name and version, checked
file by file (sha256) before each use and rebuilt when it does not match. The agent measures the
form beside the plain load (``load.optimized``), checks its answers against the reference, and
measures the time from import to the first answer with the bundle's loader (edgepack_runtime.py).
The layout of the cache is shared with edgepack_runtime.py, which uses an entry the agent marked
``use``: keep the two in sync.

stdout carries exactly one JSON document and nothing else: file descriptor 1 is pointed at
stderr while runtimes are imported and used (their C++ code may print), and the report is
written to the saved original at the end. Exit status 0 when ``ok``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback

from .agentbase import AgentFailure, ENGINES, LIMITS, PROTOCOL_VERSION, StdoutGuard, describe
from .measure import measure
from .probes import load_probe


class ArgParser(argparse.ArgumentParser):
    def error(self, message):
        raise AgentFailure("bad arguments: " + message)


def parse_args(argv: list) -> argparse.Namespace:
    p = ArgParser(prog="edgepack_agent.py", description="Measure an edgepack bundle on this device.")
    p.add_argument("bundle")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--cold-loads", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="default: all usable cores")
    p.add_argument("--engine", choices=ENGINES, default=None, help="default: from the artifact's suffix")
    p.add_argument("--delegates", default="", help="TFLite delegates: xnnpack, gpu, edgetpu or a library path")
    p.add_argument("--providers", default="", help="ONNX Runtime execution providers, in order")
    p.add_argument("--cache-dir", default=None, help="TensorRT engine cache [default: engine-cache beside the bundle]")
    p.add_argument("--load-cache", choices=("auto", "off"), default="auto", help="make and measure the load-optimised form (auto) or not")
    p.add_argument("--load-cache-dir", default=None, help="load-optimised forms [default: load-cache beside the bundle]")
    p.add_argument("--load-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--evict", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--form", default="plain", help=argparse.SUPPRESS)  # load probes: plain or a form in --form-dir
    p.add_argument("--form-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--make-form", action="store_true", help=argparse.SUPPRESS)  # a probe that makes --form in --form-dir
    p.add_argument("--phases", action="store_true", help=argparse.SUPPRESS)  # a probe that reports load phases
    p.add_argument("--check", action="store_true", help=argparse.SUPPRESS)  # a probe that checks the form's answers
    p.add_argument("--exit-with-stdin", action="store_true", help="end when stdin closes (the host went away)")
    p.add_argument("--sustained", type=float, default=None, help="then run continuously this many seconds: latency per interval, temperature")
    p.add_argument("--sustained-interval", type=float, default=None, help="with --sustained: seconds per interval [default: a tenth]")
    p.add_argument("--sysfs-root", default="/", help=argparse.SUPPRESS)  # where /sys and /proc are read (a test's fake tree)
    args = p.parse_args(argv)
    for name in ("runs", "warmup", "cold_loads", "min_seconds"):
        value = getattr(args, name)
        if not 0 <= value <= LIMITS[name]:  # NaN fails both comparisons
            raise AgentFailure("bad arguments: --%s must be between 0 and %g" % (name.replace("_", "-"), LIMITS[name]))
    for name in ("sustained", "sustained_interval"):
        value = getattr(args, name)
        if value is not None and not 0 < value <= LIMITS["min_seconds"] * 24:
            raise AgentFailure("bad arguments: --%s must be more than 0 and at most %g seconds" % (name.replace("_", "-"), LIMITS["min_seconds"] * 24))
    if args.threads is not None and args.threads < 1:
        raise AgentFailure("bad arguments: --threads must be >= 1")
    args.delegates = split_list(args.delegates)
    args.providers = split_list(args.providers)
    return args


def split_list(text: str) -> list:
    return [item.strip() for item in text.split(",") if item.strip()]


def empty_report() -> dict:
    return {
        "protocol": PROTOCOL_VERSION,
        "ok": False,
        "errors": [],
        "notes": [],
        "system": None,
        "runtime": None,
        "load": None,
        "first_inference_ms": None,
        "latency_ms": None,
        "throughput_per_s": None,
        "memory": None,
        "check": None,
        "tensorrt": None,
        "operators": None,
        "sustained": None,
    }


def exit_with_stdin() -> None:
    """End this agent, and every process it started, when stdin closes.

    The host holds stdin open for as long as it waits for the report; when the host is killed (even
    with SIGKILL) or its SSH connection drops, stdin reaches end of file here, and an orphaned agent
    would otherwise keep measuring and disturb the next bench.
    """
    if os.getpgrp() != os.getpid():
        os.setpgrp()  # lead a process group of our own, so the processes we start end with us

    def watch() -> None:
        try:
            while os.read(0, 1 << 16):
                pass
        except OSError:
            pass
        os.killpg(os.getpid(), signal.SIGKILL)  # the load and trtexec processes we started, and us
        os._exit(1)

    threading.Thread(target=watch, name="edgepack-stdin-watch", daemon=True).start()


def main(argv=None) -> int:
    guard = StdoutGuard()
    report = empty_report()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.load_probe:
            return load_probe(args, guard)
        if args.exit_with_stdin:
            exit_with_stdin()
        measure(args, report)
    except SystemExit as exc:  # --help
        if exc.code not in (0, None):
            report["errors"].append("exited with status %s" % exc.code)
        else:
            return 0
    except BaseException as exc:  # any failure is a report, never a traceback on stdout
        if not isinstance(exc, (AgentFailure, MemoryError)):
            traceback.print_exc(file=sys.stderr)
        report["errors"].append(describe(exc))
    report["ok"] = not report["errors"]
    guard.emit(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
