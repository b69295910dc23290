"""LocalTransport: the built-in `local` device, through subprocesses on this machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edgepack.device.cancel import stop_on
from edgepack.device.connect import open_transport
from edgepack.device.local import LocalTransport
from edgepack.device.probe import probe
from edgepack.device.spec import local_device, local_workdir
from edgepack.device.transport import PART_SUFFIX
from edgepack.errors import DeviceError
from tests.processes import pids_left, pids_running


@pytest.fixture
def transport(tmp_path):
    with LocalTransport(workdir=tmp_path / "device") as t:
        yield t


def files_in(root: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    out = {}
    for name, data in contents.items():
        path = root / name.replace("/", "_")
        path.write_bytes(data)
        out[name] = path
    return out


def test_open_transport_gives_local_for_the_builtin_device(isolated_user_dirs):
    with open_transport("local") as t:
        assert isinstance(t, LocalTransport)
        assert t.python == sys.executable
        assert Path(t.workdir) == local_workdir() and local_workdir().is_dir()
    assert isinstance(open_transport(local_device()), LocalTransport)


def test_push_copies_files_and_skips_unchanged_ones(transport, tmp_path):
    files = files_in(tmp_path, {"model.tflite": b"m" * 4096, "agent/run.py": b"print('hi')\n"})
    first = transport.push(files, "bundles/one")
    assert (first.files_sent, first.bytes_sent, first.files_skipped) == (2, 4096 + 12, 0)
    assert Path(first.remote_dir, "agent", "run.py").read_bytes() == b"print('hi')\n"
    again = transport.push(files, "bundles/one")
    assert (again.files_sent, again.bytes_sent, again.files_skipped) == (0, 0, 2)
    files["model.tflite"].write_bytes(b"new")
    changed = transport.push(files, "bundles/one")
    assert (changed.files_sent, changed.bytes_sent, changed.files_skipped) == (1, 3, 1)
    assert Path(first.remote_dir, "model.tflite").read_bytes() == b"new"


def test_push_resends_a_file_changed_on_the_device(transport, tmp_path):
    files = files_in(tmp_path, {"a.bin": b"original"})
    pushed = transport.push(files, "d")
    Path(pushed.remote_dir, "a.bin").write_bytes(b"tampered")
    assert transport.push(files, "d").files_sent == 1
    assert Path(pushed.remote_dir, "a.bin").read_bytes() == b"original"


def test_interrupted_copy_leaves_no_half_file(transport, tmp_path, monkeypatch):
    files = files_in(tmp_path, {"big.bin": b"x" * 100_000})

    def copy_half(src, dst, *a, **k):
        Path(dst).write_bytes(Path(src).read_bytes()[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", copy_half)
    with pytest.raises(DeviceError, match="No space left on device"):
        transport.push(files, "b")
    assert list(Path(transport.remote_path("b")).iterdir()) == []


def test_push_rejects_names_outside_the_directory(transport, tmp_path):
    (tmp_path / "f").write_text("x")
    for bad in ("../escape", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(DeviceError, match="plain relative path"):
            transport.push({bad: tmp_path / "f"}, "ok")
    with pytest.raises(DeviceError, match="plain relative path"):
        transport.push({"f": tmp_path / "f"}, "../up")


def test_push_of_a_missing_local_file_fails_clearly(transport, tmp_path):
    with pytest.raises(DeviceError, match="no such file"):
        transport.push({"m": tmp_path / "missing"}, "b")


def test_run_happens_in_the_workdir_and_returns_output(transport):
    result = transport.run([transport.python, "-c", "import os, sys; print(os.getcwd()); sys.exit(4)"], timeout=30)
    assert result.exit_code == 4 and result.stdout.strip() == transport.workdir and result.seconds > 0
    args = ["a b", "$HOME", "'; x"]
    echoed = transport.run([transport.python, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *args], timeout=30)
    assert json.loads(echoed.stdout) == args


def test_run_timeout_kills_the_command_and_its_children(transport):
    with pytest.raises(DeviceError, match="timed out after 0.5 s on local") as err:
        transport.run(["sh", "-c", "sleep 417.41 & sleep 417.41; wait"], timeout=0.5)
    assert "the command was killed" in err.value.hint
    assert pids_left("sleep 417.41") == []


def test_ctrl_c_during_a_run_kills_the_command_and_its_children(transport, monkeypatch):
    command = "sleep 417.42"
    real_communicate = subprocess.Popen.communicate

    def ctrl_c_once_it_runs(self, *args, **kwargs):
        if len(pids_running(command)) == 2:  # the two sleeps
            monkeypatch.setattr(subprocess.Popen, "communicate", real_communicate)
            raise KeyboardInterrupt
        return real_communicate(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "communicate", ctrl_c_once_it_runs)
    with pytest.raises(KeyboardInterrupt):
        with stop_on(threading.Event()):  # look at the command now and then, as a fleet does
            transport.run(["sh", "-c", f"{command} & {command}; wait"], timeout=600)
    assert pids_left(command) == []


def test_missing_python_is_a_clear_error(tmp_path):
    t = LocalTransport(python=str(tmp_path / "nope" / "python3"), workdir=tmp_path / "w")
    with pytest.raises(DeviceError) as err:
        t.run([t.python, "-V"], timeout=10)
    assert err.value.message == f"no Python at '{tmp_path / 'nope' / 'python3'}' on local"
    assert t.run(["no-such-command-xyz"], timeout=10).exit_code == 127


def test_workdir_holds_only_what_was_pushed(transport, tmp_path):
    files = files_in(tmp_path, {"m": b"1", "n": b"2"})
    transport.push(files, "bundle")
    transport.push(files, "bundle")
    assert [p.name for p in Path(transport.workdir).iterdir()] == ["bundle"]
    assert not any(p.name.endswith(PART_SUFFIX) for p in Path(transport.workdir, "bundle").iterdir())


def test_close_is_idempotent(tmp_path):
    t = LocalTransport(workdir=tmp_path)
    t.close()
    t.close()


@pytest.mark.slow  # imports TensorFlow in a subprocess
def test_probe_reports_this_machine(transport):
    info = probe(transport, timeout=300)
    assert info.python == ".".join(map(str, sys.version_info[:3]))
    assert info.workdir == transport.workdir and info.disk_free_bytes > 0
    assert {r.name for r in info.runtimes} == {"ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime", "numpy"}
    assert next(r for r in info.runtimes if r.name == "numpy").ok


def test_a_push_sweeps_stale_part_files_and_keeps_fresh_ones(transport, tmp_path):
    import os
    import time

    workdir = Path(transport.workdir)
    (workdir / "bundle-old").mkdir(parents=True)
    stale = [workdir / "bundle-old" / f"model.tflite.1a2b3c4d{PART_SUFFIX}", workdir / f"x.99999999{PART_SUFFIX}"]
    for path in stale:
        path.write_bytes(b"half a model")
        os.utime(path, (time.time() - 3600, time.time() - 3600))  # an hour untouched: its push was killed
    fresh = workdir / "bundle-old" / f"model.tflite.5e6f7a8b{PART_SUFFIX}"  # a push going on right now
    fresh.write_bytes(b"being written")
    transport.push(files_in(tmp_path, {"a.bin": b"a"}), "bundle-new")
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and (workdir / "bundle-new" / "a.bin").read_bytes() == b"a"


def test_an_interrupted_upload_leaves_no_part_file(transport, tmp_path, monkeypatch):
    import edgepack.device.local as local

    def interrupted(src, dst):
        Path(dst).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(local.shutil, "copyfile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        transport.push(files_in(tmp_path, {"big.bin": b"x" * 1000}), "bundle")
    assert list(Path(transport.workdir).rglob(f"*{PART_SUFFIX}")) == []


def test_a_held_stdin_reaches_eof_when_the_caller_is_killed(tmp_path):
    # The caller (a host process running a bench) is killed with SIGKILL while the command runs:
    # the command's stdin reaches EOF, which is how the agent knows to stop.
    marker, started = tmp_path / "eof", tmp_path / "started"
    child = (
        "import os, sys\n"
        f"open({str(started)!r}, 'w').write('started')\n"
        "while os.read(0, 1024):\n    pass\n"
        f"open({str(marker)!r}, 'w').write('eof')\n"
    )
    host = (
        "import sys\n"
        "from edgepack.device.local import LocalTransport\n"
        f"LocalTransport(workdir={str(tmp_path / 'd')!r}).run([sys.executable, '-c', {child!r}], timeout=60, hold_stdin=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", host])
    import time

    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert started.exists() and not marker.exists()  # the command waits: its stdin is open
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10  # the file exists a moment before its content is written
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "eof"
