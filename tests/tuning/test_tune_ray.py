"""`edgepack tune --ray`: the trials build as Ray tasks on a real local cluster (a head and a worker node)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app
from tests.conftest import write_target

pytestmark = pytest.mark.slow
# Ray replaces 127.0.0.1 with the machine's interface address; another loopback address stays as given.
LOOPBACK = "127.0.0.3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def ray_start(*args: str, temp_dir: Path) -> subprocess.Popen:
    """`ray start ARGS` in a session of its own: the node's daemons stay in it, and are stopped by it."""
    ray = Path(sys.executable).parent / "ray"
    proc = subprocess.Popen(
        [str(ray), "start", "--node-ip-address", LOOPBACK, "--disable-usage-stats", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(temp_dir)},
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return proc


def stop(session: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(session, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"the Ray node in session {session} did not stop")


@pytest.fixture
def ray_cluster(isolated_user_dirs):
    """A head node (no CPUs: it runs no task) and a worker node with one CPU, on loopback; the address."""
    pytest.importorskip("ray")
    temp_dir = Path(f"/tmp/eptr-{os.getpid()}")  # Ray's socket paths must stay short
    port = free_port()
    nodes = []
    try:
        nodes.append(ray_start("--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false",
                               "--ray-client-server-port", str(free_port()), "--temp-dir", str(temp_dir), temp_dir=temp_dir))
        nodes.append(ray_start("--address", f"{LOOPBACK}:{port}", "--num-cpus", "1", temp_dir=temp_dir))
        yield f"{LOOPBACK}:{port}"
    finally:
        for node in reversed(nodes):
            stop(node.pid)  # the node's session id is the pid of its `ray start`
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_trials_of_a_saved_model_build_on_the_ray_worker_and_come_back_as_bundles(ray_cluster, isolated_user_dirs, digits_files, tmp_path):
    from edgepack.bundle import read_manifest
    from edgepack.results.store import open_store

    import keras

    keras_file, data = digits_files
    model = tmp_path / "saved_model"  # a directory: it travels to the worker file by file
    keras.models.load_model(keras_file).export(model)
    write_target(isolated_user_dirs, "pi", "extends: raspberry-pi-4\ntune: {precision: [int8, fp16], sparsity: [0.0], channels: [0.0], calibration_samples: [200]}\n")
    db = tmp_path / "h.sqlite3"
    result = CliRunner().invoke(app, ["tune", str(model), "-t", "pi", "--data", str(data), "--trials", "2", "--workers", "2",
                                      "--ray", ray_cluster, "--db", str(db), "--json",
                                      "--runs", "10", "--warmup", "1", "--min-seconds", "0", "--cold-loads", "0"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [t["state"] for t in out["trials"]] == ["complete", "complete"]
    for t in out["trials"]:
        assert len(t["built"]["node"]) == 56  # a Ray node id: the task ran on the cluster
        assert not t["built"]["worker"].endswith(f":{os.getpid()}")
        bundle = Path(t["bundle"])
        assert bundle.is_relative_to(isolated_user_dirs) and read_manifest(bundle).precision.value == t["params"]["precision"]
    assert len({t["built"]["node"] for t in out["trials"]}) == 1  # the head has no CPU: only the worker builds
    with open_store(db) as history:  # benched here, from the driver, each with its trial
        assert sorted(r.trial["number"] for r in history.runs()) == [0, 1]


def test_a_real_head_passes_the_address_check_and_a_port_that_is_not_ray_fails_in_seconds(ray_cluster):
    import threading

    from edgepack.errors import EdgepackError
    from edgepack.tuning.builds import check_ray_address

    check_ray_address(ray_cluster)  # Ray's head answers HTTP/2
    for greeting in (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", None):  # an SSH port; a port that accepts and says nothing
        server = socket.socket()
        server.bind((LOOPBACK, 0))
        server.listen()

        def serve(server=server, greeting=greeting):
            conn, _ = server.accept()
            if greeting:
                conn.sendall(greeting)
            conn.recv(1024)
            time.sleep(10)
            conn.close()

        threading.Thread(target=serve, daemon=True).start()
        address = f"{LOOPBACK}:{server.getsockname()[1]}"
        with pytest.raises(EdgepackError) as exc:
            check_ray_address(address, timeout_s=2.0)
        assert "is not a Ray cluster" in exc.value.message and ("SSH-2.0" in exc.value.message) == bool(greeting)
        server.close()


def test_a_trial_folder_holding_a_users_file_is_never_replaced_by_a_ray_build(ray_cluster, isolated_user_dirs, digits_files, tmp_path):
    keras_file, data = digits_files
    write_target(isolated_user_dirs, "pi", "extends: raspberry-pi-4\ntune: {precision: [fp16], sparsity: [0.0], channels: [0.0]}\n")
    notes = isolated_user_dirs / "build" / "tune-lab" / "trial-0" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    result = CliRunner().invoke(app, ["tune", str(keras_file), "-t", "pi", "--trials", "1", "--study", "lab", "--ray", ray_cluster,
                                      "--json", "--runs", "10", "--warmup", "1", "--min-seconds", "0", "--cold-loads", "0"])
    out = json.loads(result.stdout)
    assert out["trials"][0]["state"] == "failed" and "is not a bundle: edgepack will not replace it" in out["trials"][0]["failures"][0]
    assert notes.read_text() == "mine"
