"""run_fleet: many devices at once, a bounded number at a time; failures kept; Ctrl-C stops it all."""

from __future__ import annotations

import threading

import pytest

from edgepack.device.cancel import Cancelled
from edgepack.device.fleet import run_fleet
from edgepack.device.local import LocalTransport
from edgepack.errors import DeviceError
from tests.processes import pids_left, pids_running


def test_a_fleet_runs_every_device_with_at_most_n_at_once_and_keeps_failures():
    lock, running, most = threading.Lock(), [0], [0]
    # Each device waits at the barrier for a second one, so two are always running at once. The
    # barrier's timeout is a safety net: were fewer running at once, the devices would fail.
    two_at_once = threading.Barrier(2)

    def work(name, step):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        step(f"working on {name}")
        try:
            two_at_once.wait(timeout=60)
        finally:
            with lock:
                running[0] -= 1
        if name == "bad":
            raise DeviceError(f"{name} is down")
        if name == "bug":
            raise OSError("socket closed")
        return name.upper()

    names = ["a", "bad", "b", "bug", "c", "d"]
    runs = run_fleet(names, work, max_connections=2, poll_s=0.01)
    assert most[0] == 2
    assert [r.device for r in runs] == names
    assert {r.device: r.result for r in runs if r.ok} == {"a": "A", "b": "B", "c": "C", "d": "D"}
    failed = {r.device: r.error.message for r in runs if not r.ok}
    assert failed == {"bad": "bad is down", "bug": "bug: OSError: socket closed"}
    assert all(r.state in ("done", "failed") and r.finished >= r.started for r in runs)
    with pytest.raises(DeviceError, match="at least 1"):
        run_fleet(names, work, max_connections=0)


def test_an_unexpected_error_shows_its_traceback_only_with_edgepack_debug(monkeypatch, capsys):
    def work(name, step):
        raise OSError("socket closed")

    monkeypatch.delenv("EDGEPACK_DEBUG", raising=False)
    [run] = run_fleet(["pi"], work)
    assert run.error.message == "pi: OSError: socket closed" and "EDGEPACK_DEBUG=1" in run.error.hint
    assert "Traceback" not in capsys.readouterr().err

    monkeypatch.setenv("EDGEPACK_DEBUG", "1")
    [run] = run_fleet(["pi"], work)
    err = capsys.readouterr().err
    assert run.error.message == "pi: OSError: socket closed"
    assert "Traceback (most recent call last)" in err and "in work" in err and "OSError: socket closed" in err


def test_ctrl_c_stops_the_fleet_and_kills_the_commands_running_on_its_devices(tmp_path):
    command = "sleep 417.31"
    started, outcome = [], {}

    def work(name, step):
        started.append(name)
        with LocalTransport(name=name, workdir=tmp_path / name) as t:
            try:
                t.run(command.split(), timeout=600)
            except Cancelled:
                outcome[name] = "cancelled"
                raise
            outcome[name] = "finished"

    def ctrl_c_once_both_run(runs):
        if len(pids_running(command)) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_fleet(["a", "b", "c", "d"], work, max_connections=2, on_change=ctrl_c_once_both_run, poll_s=0.01)
    assert sorted(started) == ["a", "b"]  # the devices waiting never start
    assert outcome == {"a": "cancelled", "b": "cancelled"}
    assert pids_left(command) == []
