#!/usr/bin/env python
"""Benchmark `edgepack bench` over SSH: its overhead, and the agent's latency against a plain loop.

Starts a real OpenSSH server on 127.0.0.1 and uses the device Python environment of the tests
(numpy<2, tflite-runtime, no TensorFlow). For a bundle of about 10 MB it measures the overhead of
`bench` — connecting, pushing, the agent's start, cold and warm loads, everything but the timed
runs — on the first push and on the second (which sends nothing). Then it compares the agent's
median latency with an independent plain loop over the same runtime and model, in the same run.

Devices as they are in the field, in the same run: the bundle pushed over SFTP against an exec
channel (a second server on 127.0.0.2 without an SFTP subsystem), straight and through a jump
host, with the bytes each sends; and what one jump hop adds to connecting and running a small command.

    .venv/bin/python scripts/bench_agent.py [--runs N] [--push-reps N] [--hop-reps N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

PLAIN_LOOP = """
import sys, time, numpy as np
from tflite_runtime.interpreter import Interpreter
path, runs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
it = Interpreter(model_path=path, num_threads=threads)
it.allocate_tensors()
d = it.get_input_details()[0]
x = np.load(sys.argv[4])["in_0"][:1].astype(d["dtype"])
it.set_tensor(d["index"], x)
for _ in range(10):
    it.invoke()
times = []
for _ in range(runs):
    t = time.perf_counter_ns(); it.invoke(); times.append((time.perf_counter_ns() - t) / 1e6)
print(float(np.median(times)))
"""


def ten_mb_bundle(work: Path) -> Path:
    """Build an fp32 bundle of about 10 MB: a wide MLP on the flattened digits."""
    import keras

    from edgepack.builder.pipeline import build
    from edgepack.examples import digits_data
    from edgepack.profile.store import Catalog, SearchDir, builtin_dir

    x, y = digits_data()
    flat = x.reshape(len(x), 64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(2560, activation="relu"),
                              keras.layers.Dense(1024, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(flat[:1200], y[:1200], epochs=1, verbose=0)
    model.save(work / "wide.keras")
    np.savez(work / "wide.npz", x=flat[1200:], y=y[1200:])
    targets = work / "targets"
    targets.mkdir()
    (targets / "pi-fp32.yaml").write_text("extends: raspberry-pi-4\nbuild: {precision: fp32}\nbudgets: {max_accuracy_drop: 1.0}\n")
    catalog = Catalog([SearchDir("project", targets), SearchDir("builtin", builtin_dir())])
    return build(work / "wide.keras", "pi-fp32", data=work / "wide.npz", out=work / "bundle", use_cache=False, catalog=catalog).bundle


def field_figures(bundle: Path, python: str, work: Path, sftp_server, reps: int, hops: int) -> None:
    """Print the push methods (SFTP, exec, exec through a jump host) and the cost of one jump hop."""
    import time

    from edgepack.device import inventory as inv
    from edgepack.device.connect import open_transport
    from tests.integration.sshd import running_sshd

    os.environ.pop("SSH_AUTH_SOCK", None)  # keys from the files named only, as the tests do
    files = {p.name: p for p in sorted(bundle.iterdir()) if p.is_file()}
    size = sum(p.stat().st_size for p in files.values())
    with running_sshd(work / "gateway") as gw, running_sshd(work / "board", host="127.0.0.2", sftp=False, forwarding=False) as board:
        ssh = Path(os.environ["HOME"]) / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        (ssh / "config").write_text(f"Host gw\n  HostName {gw.host}\n  Port {gw.port}\n  User {gw.user}\n  IdentityFile {gw.client_key}\n")
        (ssh / "known_hosts").write_text(f"{sftp_server.known_hosts_line}\n{gw.known_hosts_line}\n{board.known_hosts_line}\n")

        def device(name, server, jump=None):
            return inv.make_device(name=name, host=server.host, port=server.port, user=server.user, key=str(server.client_key),
                                   python=python, workdir=str(work / f"{name}-work"), jump=jump)

        devices = {"sftp, direct": device("sftp", sftp_server), "exec, direct": device("board", board),
                   "exec, via gw": device("board-gw", board, "gw")}
        print(f"\npush of the bundle: {len(files)} files, {size / 1e6:.1f} MB, median of {reps} fresh pushes (methods interleaved)")
        transports = {label: open_transport(dev) for label, dev in devices.items()}
        try:
            rows: dict[str, list[tuple[float, ...]]] = {label: [] for label in devices}
            for i in range(reps):
                for label, t in transports.items():
                    assert t.push_method == label.split(",")[0], (label, t.push_method)
                    start = time.perf_counter()
                    first = t.push(files, f"bundle-{i}")
                    mid = time.perf_counter()
                    again = t.push(files, f"bundle-{i}")
                    rows[label].append((first.bytes_sent, mid - start, again.bytes_sent, time.perf_counter() - mid))
        finally:
            for t in transports.values():
                t.close()
        print("method        | sent MB | push s | MB/s  | again: sent B | again s")
        for label, runs in rows.items():
            sent, seconds, again_sent, again_s = (float(np.median([r[k] for r in runs])) for k in range(4))
            print(f"{label:<13} | {sent / 1e6:7.2f} | {seconds:6.3f} | {sent / 1e6 / seconds:5.1f} | {again_sent:13.0f} | {again_s:7.3f}")

        print(f"\nconnect + one small command (`true`), median of {hops} (routes interleaved)")
        routes = {"direct": devices["exec, direct"], "via gw": devices["exec, via gw"]}
        figures: dict[str, list[tuple[float, float, float]]] = {label: [] for label in routes}
        for _ in range(hops):
            for label, dev in routes.items():
                start = time.perf_counter()
                with open_transport(dev) as t:
                    connected = time.perf_counter()
                    t.run(["true"], timeout=30)
                    done = time.perf_counter()
                figures[label].append((connected - start, done - connected, done - start))
        print("route        | connect s | command s | total s")
        for label, runs in figures.items():
            connect_s, command_s, total_s = (float(np.median([r[k] for r in runs])) for k in range(3))
            print(f"{label:<12} | {connect_s:9.3f} | {command_s:9.3f} | {total_s:7.3f}")
        paired = [v[0] - d[0] for v, d in zip(figures["via gw"], figures["direct"])]
        print(f"one jump hop adds {float(np.median(paired)):.3f} s to connecting (median of the paired differences; "
              f"the command itself runs over the same connection either way)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--push-reps", type=int, default=5, help="fresh pushes per push method")
    parser.add_argument("--hop-reps", type=int, default=20, help="connections per route for the jump hop's cost")
    args = parser.parse_args()

    from tests.integration.sshd import device_env_python, running_sshd

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "HOME"):
            os.environ[var] = str(work / var.lower())
        python = device_env_python()
        bundle = ten_mb_bundle(work)
        size_mb = sum(f.stat().st_size for f in bundle.iterdir()) / 1e6

        from edgepack.benchmark import BenchOptions, bench
        from edgepack.device import inventory as inv
        from edgepack.device.ssh import known_hosts_path

        with running_sshd(work / "sshd") as server:
            known = known_hosts_path()
            known.parent.mkdir(parents=True, exist_ok=True)
            known.write_text(server.known_hosts_line + "\n")
            inventory = work / "devices.yaml"
            inv.add_device(inv.make_device(name="loop", host=server.host, port=server.port, user=server.user,
                                           key=str(server.client_key), python=python, workdir=str(work / "device")), inventory)
            options = BenchOptions(runs=args.runs, warmup=10, min_seconds=0, cold_loads=3, threads=args.threads)
            print(f"bundle: {size_mb:.1f} MB, {args.runs} timed runs, {args.threads} thread(s), loopback SSH to {server.host}:{server.port}")
            print("push    | sent MB | connect s | push s | agent s | total s | timed runs s | overhead s")
            results = []
            for label in ("first", "second"):
                r = bench(bundle, "loop", options, inventory=inventory)
                timed = sum(r.report.latency_ms.samples) / 1000
                print(f"{label:<7} | {r.push.bytes_sent / 1e6:7.2f} | {r.seconds['connect']:9.3f} | {r.seconds['push']:6.3f} | "
                      f"{r.seconds['run']:7.3f} | {r.seconds['total']:7.3f} | {timed:12.3f} | {r.seconds['total'] - timed:10.3f}")
                results.append(r)

            plain = float(subprocess.run(
                [python, "-c", PLAIN_LOOP, str(bundle / "model.tflite"), str(args.runs), str(args.threads), str(bundle / "reference.npz")],
                check=True, capture_output=True, text=True,
            ).stdout.split()[-1])
            agent = results[-1].report.latency_ms.p50
            print(f"median latency: agent {agent:.3f} ms, plain loop {plain:.3f} ms, difference {100 * (agent - plain) / plain:+.1f}%")
            field_figures(bundle, python, work, server, args.push_reps, args.hop_reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
