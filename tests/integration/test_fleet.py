"""Benchmark one bundle on a fleet: three real OpenSSH servers as devices, and one device that is down."""

from __future__ import annotations

import contextlib
import json

import pytest
from typer.testing import CliRunner

from edgepack.benchmark import BenchOptions, bench_fleet
from edgepack.cli.app import app
from edgepack.device import inventory as inv
from edgepack.results.store import open_store
from tests.integration.sshd import Unavailable, free_port, running_sshd
from tests.unavailable import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]
QUICK = ["--runs", "20", "--warmup", "2", "--min-seconds", "0", "--cold-loads", "1"]
NAMES = ["pi-a", "pi-b", "pi-c"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Three real sshd servers on 127.0.0.1, each on its own port with its own host key."""
    with contextlib.ExitStack() as stack:
        try:
            yield [stack.enter_context(running_sshd(tmp_path_factory.mktemp(f"sshd-{n}"))) for n in NAMES]
        except Unavailable as exc:
            unavailable(str(exc))


@pytest.fixture
def fleet(servers, device_python, ssh_home, tmp_path):
    """An inventory with the three servers as trusted devices, a device nobody answers for, and the group `lab`."""
    from edgepack.device.ssh import known_hosts_path

    known = known_hosts_path()
    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text("".join(s.known_hosts_line + "\n" for s in servers))
    path = tmp_path / "devices.yaml"
    for name, server in zip(NAMES, servers):
        inv.add_device(inv.make_device(name=name, host=server.host, port=server.port, user=server.user,
                                       key=str(server.client_key), python=device_python,
                                       workdir=str(tmp_path / f"work-{name}"), connect_timeout_s=5), path)
    # Nothing listens on this port: the connection is refused, as for a device that is switched off.
    inv.add_device(inv.make_device(name="pi-down", host="127.0.0.1", port=free_port(), user=servers[0].user,
                                   key=str(servers[0].client_key), python=device_python, connect_timeout_s=3), path)
    inv.load_inventory(path).set_group("lab", [*NAMES, "pi-down"])
    return path


def test_a_fleet_bench_measures_every_device_and_reports_the_one_that_is_down(fleet, digits_bundles, tmp_path):
    db = tmp_path / "h.sqlite3"
    result = CliRunner().invoke(
        app, ["bench", str(digits_bundles["int8"]), "--device", "lab", "--inventory", str(fleet), "--db", str(db),
              "--max-connections", "2", *QUICK],
    )
    assert result.exit_code == 2, result.output  # a device failed: 2, whatever the others did
    for name in NAMES:
        assert f"✓ {name}: p50" in result.output
    assert "✗ pi-down:" in result.output
    summary = result.output[result.output.index("on 4 devices"):]
    for name in [*NAMES, "pi-down"]:
        assert name in summary
    assert "3 of 4 devices measured, 1 failed" in result.output
    assert "1 of 4 devices could not be measured: pi-down:" in result.output
    with open_store(db) as history:
        runs = history.runs()
    assert sorted(r.device for r in runs) == NAMES
    assert all(r.report.runtime.name == "tflite_runtime" and r.target == "pi-int8" for r in runs)


def test_a_fleet_bench_with_every_device_up_exits_0_and_json_lists_each(fleet, digits_bundles, tmp_path):
    db = tmp_path / "h.sqlite3"
    args = ["bench", str(digits_bundles["fp32"]), "--inventory", str(fleet), "--db", str(db), *QUICK, "--json"]
    for name in NAMES:
        args += ["--device", name]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["device"] for d in data] == NAMES and all(d["ok"] for d in data)
    assert sorted(d["result"]["run_id"] for d in data) == [1, 2, 3]
    assert all(d["result"]["report"]["check"]["top1_agreement"] == 1.0 for d in data)


def test_the_fleet_api_keeps_each_devices_result_or_error(fleet, digits_bundles, tmp_path):
    seen = []
    runs = bench_fleet(
        digits_bundles["fp16"], ["pi-down", "pi-a", "pi-b"], BenchOptions(runs=10, warmup=1, min_seconds=0, cold_loads=0),
        inventory=fleet, db=tmp_path / "h.sqlite3", max_connections=3, on_change=lambda rs: seen.append([r.state for r in rs]),
    )
    assert [r.device for r in runs] == ["pi-down", "pi-a", "pi-b"]
    down, a, b = runs
    assert down.state == "failed" and down.result is None and "pi-down" in down.error.message
    assert a.state == b.state == "done", [(r.device, r.error.message, r.error.details) for r in runs if r.error]
    assert a.result.report.ok and b.result.run_id is not None
    assert seen[0] == ["waiting"] * 3 and seen[-1] == ["failed", "done", "done"]


def test_deploy_takes_the_fleet_options(fleet, digits_files, tmp_path):
    model, data = digits_files
    db = tmp_path / "h.sqlite3"
    result = CliRunner().invoke(
        app, ["deploy", str(model), "--data", str(data), "-t", "raspberry-pi-4", "--device", "pi-a", "--device", "pi-down",
              "--inventory", str(fleet), "--db", str(db), *QUICK],
    )
    assert result.exit_code == 2, result.output
    assert "✓ pi-a: p50" in result.output and "✗ pi-down:" in result.output
    assert "raspberry-pi-4 on 2 devices" in result.output
    with open_store(db) as history:
        assert [(r.device, r.target) for r in history.runs()] == [("pi-a", "raspberry-pi-4")]


def test_an_unknown_device_in_a_fleet_is_refused_before_anything_runs(fleet, digits_bundles, tmp_path):
    result = CliRunner().invoke(
        app, ["bench", str(digits_bundles["fp32"]), "--device", "pi-a", "--device", "pi-bb", "--inventory", str(fleet),
              "--db", str(tmp_path / "h.sqlite3")],
    )
    assert result.exit_code == 2 and "unknown device 'pi-bb'" in result.output and "pi-b" in result.output
    assert "✓" not in result.output


def test_deploy_to_devices_with_their_own_targets_goes_on_past_one_that_is_down(fleet, digits_files, tmp_path):
    # No --target: each device brings its own, so each target is a part with one device; the one
    # that is down must not stop the other part from being built and measured.
    import edgepack
    from edgepack.benchmark import BenchOptions

    for name, target in (("pi-a", "raspberry-pi-4"), ("pi-down", "pixel-8")):
        device = inv.get_device(name, fleet).model_copy(update={"target": target})
        inv.remove_device(name, fleet)
        inv.add_device(device, fleet)
    path = fleet
    model, data = digits_files
    deployment = edgepack.deploy(model, devices=["pi-down", "pi-a"], data=data, inventory=path, db=tmp_path / "h.sqlite3",
                                 options=BenchOptions(runs=10, warmup=1, min_seconds=0, cold_loads=0))
    parts = {part.target: part for part in deployment.parts}
    assert set(parts) == {"pixel-8", "raspberry-pi-4"}
    assert parts["pixel-8"].runs[0].error is not None and "pi-down" in parts["pixel-8"].runs[0].error.message
    assert parts["raspberry-pi-4"].results[0].report.ok
    assert any(f.startswith("pi-down: ") for f in deployment.failures)
