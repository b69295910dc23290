"""`edgepack bench` over real SSH, on a device Python with tflite-runtime and no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgepack.benchmark import BenchOptions, bench
from edgepack.cli.app import app
from edgepack.device import inventory as inv
from edgepack.errors import DeviceError

pytestmark = [pytest.mark.integration, pytest.mark.slow]
QUICK = BenchOptions(runs=20, warmup=2, min_seconds=0, cold_loads=2)
REPO = Path(__file__).resolve().parents[2]


def leftovers(workdir: Path) -> list[str]:
    """Everything in the device workdir that is not a pushed bundle directory or its files."""
    odd = []
    for path in workdir.rglob("*"):
        rel = path.relative_to(workdir)
        if not rel.parts[0].startswith("bundle-") or path.name.endswith(".edgepack-part"):
            odd.append(str(rel))
    return odd


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_bench_over_ssh_with_tflite_runtime(ssh_device, digits_bundles, precision):
    result = bench(digits_bundles[precision], "sshdev", QUICK, inventory=ssh_device.inventory)
    r = result.report
    assert r.ok and r.runtime.name == "tflite_runtime"
    assert r.system.python.startswith("3.11")
    assert len(r.latency_ms.samples) >= 20 and len(r.load.cold_ms) == 2
    assert r.check.top1_agreement >= 0.875
    assert result.push.files_sent == 5  # the model, reference.npz, the loader, the manifest and the agent
    assert leftovers(Path(ssh_device.device.workdir)) == []


def test_second_push_over_ssh_sends_zero_bytes(ssh_device, digits_bundles):
    bench(digits_bundles["fp32"], "sshdev", QUICK, inventory=ssh_device.inventory)
    again = bench(digits_bundles["fp32"], "sshdev", QUICK, inventory=ssh_device.inventory)
    assert again.push.bytes_sent == 0 and again.push.files_sent == 0


def test_a_model_the_device_runtime_rejects_gives_the_agents_reason_and_leaves_nothing(ssh_device, digits_bundles):
    # tflite-runtime 2.14 cannot run dynamic-range models made by TensorFlow 2.21.
    with pytest.raises(DeviceError) as exc:
        bench(digits_bundles["dynamic-int8"], "sshdev", QUICK, inventory=ssh_device.inventory)
    assert "the agent on sshdev could not measure" in exc.value.message
    assert "tflite_runtime 2.14.0 rejected model.tflite" in exc.value.message
    assert "FULLY_CONNECTED" in exc.value.message
    assert leftovers(Path(ssh_device.device.workdir)) == []


@pytest.fixture(scope="session")
def bare_python() -> str:
    """A device Python with numpy but no inference runtime at all."""
    env = REPO / ".cache" / "bare-env"
    python = env / "bin" / "python"
    check = [str(python), "-c", "import numpy"]
    if not python.exists() or subprocess.run(check, capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy<2"], check=True)
    return str(python)


def test_a_device_without_a_runtime_says_so(ssh_device, digits_bundles, bare_python, tmp_path):
    device = ssh_device.device.model_copy(update={"name": "bare", "python": bare_python})
    inv.add_device(device, ssh_device.inventory)
    result = CliRunner().invoke(
        app, ["bench", str(digits_bundles["fp32"]), "--device", "bare", "--inventory", str(ssh_device.inventory), "--runs", "5"]
    )
    assert result.exit_code == 2, result.output
    assert "could not measure" in result.output and "ai_edge_litert" in result.output and "tflite_runtime" in result.output
    assert "Traceback" not in result.output


def test_bench_cli_over_ssh(ssh_device, digits_bundles):
    result = CliRunner().invoke(
        app,
        ["bench", str(digits_bundles["int8"]), "--device", "sshdev", "--inventory", str(ssh_device.inventory),
         "--runs", "20", "--warmup", "2", "--min-seconds", "0", "--cold-loads", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "tflite_runtime" in result.output and "latency p90" in result.output
