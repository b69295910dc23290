#!/usr/bin/env python
"""Benchmark fleet benching: one bundle on eight devices at once against the same bundle on one.

Starts eight real OpenSSH servers on 127.0.0.1 (the integration tests' `running_sshd`), each a
"device" running the tests' device Python (numpy<2, tflite-runtime, no TensorFlow), and measures
the wall time of `edgepack.benchmark.bench` on one device and of `bench_fleet` on all eight (at most
`--max-connections` at once), first with a push into empty work directories and then again with
the bundle already there. The aim is a fleet wall time of at most 1.5x the single device's.

All eight "devices" share this machine's CPU cores, unlike a real fleet: the agents' process
starts and cold loads compete for them. The script prints the CPU time the runs took (this
process and everything the sshd servers ran) and the CPU-bound floor: the fleet's CPU time over
the number of cores. A fleet time at that floor means the cores, not edgepack, set
the pace; on a machine with a core or more per device the floor is the single device's time.

    .venv/bin/python scripts/bench_fleet.py [--bundle DIR] [--devices 8] [--runs N] [--cold-loads N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def digits_bundle(work: Path) -> Path:
    """Build the digits CNN for raspberry-pi-4 (TFLite int8, about 45 KB)."""
    import numpy as np

    from edgepack.builder.pipeline import build
    from edgepack.examples import digits_cnn, digits_data

    x, y = digits_data()
    digits_cnn(x[:1200], y[:1200], epochs=5).save(work / "cnn.keras")
    np.savez(work / "digits.npz", x=x[1200:], y=y[1200:])
    return build(work / "cnn.keras", "raspberry-pi-4", data=work / "digits.npz", out=work / "bundle", use_cache=False).bundle


def cpu_seconds(servers) -> float:
    """Return the CPU seconds used so far by this process and by everything the sshd servers ran.

    An sshd reaps its sessions and a session its commands, so the children's times of each
    server's main process (/proc/PID/stat cutime + cstime) hold every finished agent's CPU time.
    Other work on this machine is not counted.
    """
    time.sleep(1.0)  # sshd reaps a finished session a moment after its channel closed
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(os.times()[:2])
    for server in servers:
        pid = int((server.root / "sshd.pid").read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(float(v) for v in fields[11:15]) / tick  # utime, stime, cutime, cstime
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="bundle to measure [default: build the digits CNN for raspberry-pi-4]")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--max-connections", type=int, default=8)
    parser.add_argument("--runs", type=int, default=None, help="timed runs [default: the profile's]")
    parser.add_argument("--min-seconds", type=float, default=None, help="[default: the profile's]")
    parser.add_argument("--cold-loads", type=int, default=None, help="[default: the profile's]")
    args = parser.parse_args()

    from tests.integration.sshd import device_env_python, running_sshd

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "HOME"):
            os.environ[var] = str(work / var.lower())
        os.environ.pop("SSH_AUTH_SOCK", None)
        (work / "home" / ".ssh").mkdir(parents=True)
        python = device_env_python()
        bundle = args.bundle or digits_bundle(work)

        from edgepack.benchmark import BenchOptions, bench, bench_fleet
        from edgepack.bundle import read_manifest
        from edgepack.device import inventory as inv
        from edgepack.device.ssh import known_hosts_path

        with contextlib.ExitStack() as stack:
            servers = [stack.enter_context(running_sshd(work / f"sshd-{i}")) for i in range(args.devices)]
            known = known_hosts_path()
            known.parent.mkdir(parents=True, exist_ok=True)
            known.write_text("".join(s.known_hosts_line + "\n" for s in servers))
            inventory = work / "devices.yaml"

            def add(name: str, server) -> str:
                inv.add_device(inv.make_device(name=name, host=server.host, port=server.port, user=server.user,
                                               key=str(server.client_key), python=python, workdir=str(work / "device" / name)),
                               inventory)
                return name

            fleet = [add(f"dev{i}", s) for i, s in enumerate(servers)]
            solo = add("solo", servers[0])  # same server as dev0, its own (empty) work directory
            options = BenchOptions(runs=args.runs, min_seconds=args.min_seconds, cold_loads=args.cold_loads)
            bench_settings = read_manifest(bundle).profile.bench.model_dump()
            print(f"bundle: {bundle.name} ({sum(f.stat().st_size for f in bundle.iterdir()) / 1024:.0f} KB); "
                  f"profile bench settings {bench_settings}, overrides runs={args.runs} min_seconds={args.min_seconds} "
                  f"cold_loads={args.cold_loads}")
            print(f"{args.devices} sshd devices on 127.0.0.1, max {args.max_connections} connections, this machine has {os.cpu_count()} cores")
            print(f"push   | 1 device: s (CPU s) | {args.devices} devices: s (CPU s) | ratio | CPU-bound floor s")
            for label in ("first", "cached"):
                cpu0 = cpu_seconds(servers)
                t = time.perf_counter()
                one = bench(bundle, solo, options, inventory, db=work / "history.sqlite3")
                single = time.perf_counter() - t
                cpu1 = cpu_seconds(servers)
                t = time.perf_counter()
                runs = bench_fleet(bundle, fleet, options, inventory, db=work / "history.sqlite3", max_connections=args.max_connections)
                many = time.perf_counter() - t
                cpu2 = cpu_seconds(servers)
                failed = [f"{r.device}: {r.error.message}" for r in runs if r.error]
                if failed:
                    print("failed: " + "; ".join(failed))
                    return 1
                # The fleet cannot finish faster than its CPU work spread over every core, nor faster than one device.
                floor = max(single, (cpu2 - cpu1) / (os.cpu_count() or 1))
                print(f"{label:<6} | {single:8.2f} ({cpu1 - cpu0:5.1f}) | {many:10.2f} ({cpu2 - cpu1:6.1f}) | "
                      f"{many / single:5.2f} | {floor:17.2f}")
                assert one.report.ok
    return 0


if __name__ == "__main__":
    sys.exit(main())
