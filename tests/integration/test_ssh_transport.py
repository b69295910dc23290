"""SshTransport and `edgepack devices` against a real OpenSSH server and a device Python environment."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app
from edgepack.device import inventory as inv
from edgepack.device.cancel import Cancelled
from edgepack.device.connect import open_transport
from edgepack.device.fleet import run_fleet
from edgepack.device.probe import probe
from edgepack.device.ssh import SshTransport, known_hosts_path, trust
from edgepack.device.transport import PART_SUFFIX
from edgepack.errors import DeviceError
from tests.integration.sshd import free_port, keygen, ssh_fingerprint
from tests.processes import pids_left, pids_running

pytestmark = pytest.mark.integration
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def untrusted_device(sshd, ssh_home, **overrides) -> inv.Device:
    fields = dict(
        name="box", host=sshd.host, port=sshd.port, user=sshd.user, key=str(sshd.client_key),
        workdir=str(ssh_home / "device-work"), connect_timeout_s=5,
    )
    fields.update(overrides)
    return inv.make_device(**fields)


def write_files(root: Path, files: dict[str, bytes]) -> dict[str, Path]:
    out = {}
    for name, content in files.items():
        path = root / name.replace("/", "__")
        path.write_bytes(content)
        out[name] = path
    return out


def test_push_then_run_over_ssh(ssh_device, tmp_path):
    files = write_files(tmp_path, {"model.bin": os.urandom(300_000), "agent.py": b"import sys\nprint('agent', sys.argv[1:])\n"})
    with open_transport(ssh_device.device) as t:
        pushed = t.push(files, "bundles/abc")
        assert (pushed.files_sent, pushed.files_skipped) == (2, 0)
        assert pushed.bytes_sent == 300_000 + files["agent.py"].stat().st_size
        assert pushed.remote_dir == t.remote_path("bundles/abc") == str(tmp_path / "device-work" / "bundles" / "abc")
        result = t.run([t.python, t.remote_path("bundles/abc", "agent.py"), "--runs", "3"], timeout=60)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "agent ['--runs', '3']"
    assert result.stderr == "" and result.seconds > 0
    assert (Path(pushed.remote_dir) / "model.bin").read_bytes() == files["model.bin"].read_bytes()


def test_second_push_of_the_same_files_sends_nothing(ssh_device, tmp_path):
    files = write_files(tmp_path, {"a.bin": b"a" * 5000, "sub/b.bin": b"b" * 7000})
    with open_transport(ssh_device.device) as t:
        first = t.push(files, "cache")
        again = t.push(files, "cache")
        files["a.bin"].write_bytes(b"changed")
        changed = t.push(files, "cache")
    assert (first.files_sent, first.bytes_sent) == (2, 12000)
    assert (again.files_sent, again.bytes_sent, again.files_skipped) == (0, 0, 2)
    assert (changed.files_sent, changed.bytes_sent, changed.files_skipped) == (1, 7, 1)
    assert (Path(first.remote_dir) / "a.bin").read_bytes() == b"changed"
    assert (Path(first.remote_dir) / "sub" / "b.bin").read_bytes() == b"b" * 7000


def test_arguments_reach_the_device_exactly_as_given(ssh_device):
    tricky = ["a b", "$HOME", "'; touch pwned; '", '"quoted"', "back\\slash", "*", "", "new\nline", "ünï"]
    with open_transport(ssh_device.device) as t:
        result = t.run([t.python, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *tricky], timeout=30)
        cwd = t.run(["pwd"], timeout=30).stdout.strip()
    assert json.loads(result.stdout) == tricky
    assert cwd == str(Path(ssh_device.device.workdir))
    assert not (Path(ssh_device.device.workdir) / "pwned").exists()


def test_exit_code_and_stderr_come_back(ssh_device):
    with open_transport(ssh_device.device) as t:
        result = t.run([t.python, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"], timeout=30)
    assert (result.exit_code, result.stderr) == (3, "boom\n")


def test_command_timeout_kills_the_remote_process(ssh_device):
    with open_transport(ssh_device.device) as t:
        with pytest.raises(DeviceError, match=r"timed out after 1 s on sshdev") as err:
            t.run(["sh", "-c", "sleep 417.25; echo never"], timeout=1)
        assert "the command was killed" in err.value.hint
        assert t.run(["echo", "still usable"], timeout=30).stdout == "still usable\n"
    assert pids_left("sh -c sleep 417.25; echo never") == [] and pids_left("sleep 417.25") == []


@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), RuntimeError("a bug while reading the output")], ids=repr)
def test_an_interrupted_run_kills_the_remote_process(ssh_device, monkeypatch, interruption):
    import paramiko

    command = "sleep 417.3"
    real_recv_ready = paramiko.Channel.recv_ready

    def interrupt_once_it_runs(self):
        if pids_running(command):  # the device is this machine: the remote command is visible here
            monkeypatch.setattr(paramiko.Channel, "recv_ready", real_recv_ready)
            raise interruption
        return real_recv_ready(self)

    with open_transport(ssh_device.device) as t:
        monkeypatch.setattr(paramiko.Channel, "recv_ready", interrupt_once_it_runs)
        with pytest.raises(type(interruption)):
            t.run(command.split(), timeout=600)
        assert pids_left(command) == []
        assert t.run(["echo", "still usable"], timeout=30).stdout == "still usable\n"


def test_ctrl_c_during_a_fleet_kills_the_commands_on_every_connected_device(ssh_device):
    command = "sleep 417.32"
    devices = {name: ssh_device.device.model_copy(update={"name": name}) for name in ("pi-a", "pi-b", "pi-c")}
    started, outcome = [], {}

    def work(name, step):
        started.append(name)
        with open_transport(devices[name], progress=step) as t:
            try:
                t.run(command.split(), timeout=600)
            except Cancelled:
                outcome[name] = "cancelled"
                raise
            outcome[name] = "finished"

    def ctrl_c_once_two_run(runs):
        if len(pids_running(command)) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_fleet(list(devices), work, max_connections=2, on_change=ctrl_c_once_two_run, poll_s=0.01)
    assert sorted(started) == ["pi-a", "pi-b"]
    assert outcome == {"pi-a": "cancelled", "pi-b": "cancelled"}
    assert pids_left(command) == []


def test_unknown_host_key_is_refused_with_fingerprint_and_trust_hint(sshd, ssh_home):
    device = untrusted_device(sshd, ssh_home)
    with pytest.raises(DeviceError) as err:
        open_transport(device)
    assert sshd.known_hosts_name in err.value.message
    assert ssh_fingerprint(sshd.host_key_pub) in err.value.message
    assert err.value.hint is not None and "edgepack devices trust box" in err.value.hint
    assert not known_hosts_path().exists()  # never added on its own
    assert not (ssh_home / ".ssh" / "known_hosts").exists()


def test_trust_yes_then_the_connection_works(sshd, ssh_home, tmp_path):
    inventory = tmp_path / "devices.yaml"
    inv.add_device(untrusted_device(sshd, ssh_home), inventory)
    result = cli("devices", "trust", "box", "--yes", "--inventory", str(inventory))
    assert result.exit_code == 0, result.output
    assert ssh_fingerprint(sshd.host_key_pub) in result.output
    assert known_hosts_path().read_text().split() == sshd.known_hosts_line.split()
    with open_transport("box", inventory=inventory) as t:
        assert t.run(["echo", "hi"], timeout=30).stdout == "hi\n"
    again = cli("devices", "trust", "box", "--yes", "--inventory", str(inventory))
    assert again.exit_code == 0 and "already trusted" in again.output
    assert len(known_hosts_path().read_text().splitlines()) == 1


def test_trust_with_nobody_to_answer_exits_2_and_points_at_yes(sshd, ssh_home, tmp_path):
    inventory = tmp_path / "devices.yaml"
    inv.add_device(untrusted_device(sshd, ssh_home), inventory)
    result = runner.invoke(app, ["devices", "trust", "box", "--inventory", str(inventory)])  # stdin at EOF
    assert result.exit_code == 2, result.output
    assert "error: not trusting" in result.output and "no answer" in result.output
    assert "edgepack devices trust box --yes" in result.output and "Aborted" not in result.output
    assert ssh_fingerprint(sshd.host_key_pub) in result.output
    assert not known_hosts_path().exists()


def test_trust_without_yes_asks_and_a_no_writes_nothing(sshd, ssh_home, tmp_path):
    inventory = tmp_path / "devices.yaml"
    inv.add_device(untrusted_device(sshd, ssh_home), inventory)
    result = runner.invoke(app, ["devices", "trust", "box", "--inventory", str(inventory)], input="n\n")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert ssh_fingerprint(sshd.host_key_pub) in result.output
    assert not known_hosts_path().exists()


def test_changed_host_key_is_refused(sshd, ssh_home, tmp_path):
    other = keygen(tmp_path / "impostor")
    other_line = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    (ssh_home / ".ssh" / "known_hosts").write_text(f"{sshd.known_hosts_name} {other_line}\n")
    device = untrusted_device(sshd, ssh_home)
    with pytest.raises(DeviceError) as err:
        open_transport(device)
    assert "CHANGED" in err.value.message and "attack" in err.value.message
    assert ssh_fingerprint(sshd.host_key_pub) in err.value.message
    assert "ssh-keygen -R" in err.value.hint and str(ssh_home / ".ssh" / "known_hosts") in err.value.hint
    with pytest.raises(DeviceError, match="already has a different key"):
        trust(device, yes=True)
    assert not known_hosts_path().exists()


def test_wrong_client_key_is_refused_clearly(ssh_device, tmp_path):
    wrong = keygen(tmp_path / "wrong_key")
    device = ssh_device.device.model_copy(update={"key": str(wrong)})
    with pytest.raises(DeviceError) as err:
        open_transport(device)
    assert "authentication refused" in err.value.message
    assert f"{device.user}@{device.host}" in err.value.message and str(wrong) in err.value.message
    assert "BEGIN" not in err.value.message + (err.value.hint or "")  # never key contents


def test_missing_key_file_is_reported_before_connecting(ssh_device, tmp_path):
    device = ssh_device.device.model_copy(update={"key": str(tmp_path / "nope")})
    with pytest.raises(DeviceError, match=r"key file .*nope.* not found"):
        open_transport(device)


def test_a_port_nobody_listens_on_is_refused_clearly(ssh_home, sshd):
    port = free_port()
    device = untrusted_device(sshd, ssh_home, port=port, connect_timeout_s=3)
    with pytest.raises(DeviceError, match=rf"^cannot reach box at 127\.0\.0\.1:{port}: connection refused$") as err:
        open_transport(device)
    assert f"sshd listens on port {port}" in err.value.hint


def test_a_port_that_never_answers_gives_up_after_the_connect_timeout(sshd, ssh_home):
    import socket

    with socket.socket() as silent:  # accepts TCP connections (kernel backlog) but never speaks SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        device = untrusted_device(sshd, ssh_home, port=silent.getsockname()[1], connect_timeout_s=1.5)
        with pytest.raises(DeviceError, match=r"^no SSH answer from box at 127\.0\.0\.1:\d+ within 1\.5 s$") as err:
            open_transport(device)
    assert "is the device's SSH port" in err.value.hint


def test_passphrase_protected_key_asks_for_the_agent(ssh_device, tmp_path):
    locked = tmp_path / "locked_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-phrase", "-f", str(locked)], check=True)
    device = ssh_device.device.model_copy(update={"key": str(locked)})
    with pytest.raises(DeviceError) as err:
        open_transport(device)
    assert "encrypted with a passphrase" in err.value.message and "ssh-add" in err.value.hint
    assert "s3cret-phrase" not in err.value.message + err.value.hint


def test_missing_remote_python_gives_a_clear_message(ssh_device, tmp_path):
    device = ssh_device.device.model_copy(update={"python": "/opt/no/such/python3"})
    (tmp_path / "f").write_text("x")
    with open_transport(device) as t:
        with pytest.raises(DeviceError) as err:
            t.run([t.python, "-V"], timeout=30)
        assert err.value.message == "no Python at '/opt/no/such/python3' on sshdev"
        assert "--python PATH" in err.value.hint
        with pytest.raises(DeviceError, match="no Python at"):
            t.push({"f": tmp_path / "f"}, "x")
        other = t.run(["no-such-command-here"], timeout=30)  # only the device Python gets the special message
    assert other.exit_code == 127


def test_workdir_holds_only_the_pushed_dir(ssh_device, tmp_path):
    files = write_files(tmp_path, {"model.tflite": b"m" * 1000, "agent.py": b"print(1)\n"})
    with open_transport(ssh_device.device) as t:
        t.push(files, "bundle-1")
        t.push(files, "bundle-1")
        t.run([t.python, t.remote_path("bundle-1", "agent.py")], timeout=30)
        workdir = Path(t.workdir)
    assert sorted(p.name for p in workdir.iterdir()) == ["bundle-1"]
    assert sorted(p.name for p in (workdir / "bundle-1").iterdir()) == ["agent.py", "model.tflite"]


def test_interrupted_upload_leaves_no_half_file(ssh_device, tmp_path, monkeypatch):
    import paramiko

    files = write_files(tmp_path, {"big.bin": os.urandom(200_000)})
    real_put = paramiko.SFTPClient.put

    def put_half_then_fail(self, localpath, remotepath, *args, **kwargs):
        with self.open(remotepath, "wb") as fh:
            fh.write(Path(localpath).read_bytes()[:1000])
        raise OSError("connection lost")

    with open_transport(ssh_device.device) as t:
        monkeypatch.setattr(paramiko.SFTPClient, "put", put_half_then_fail)
        with pytest.raises(DeviceError, match="SFTP failed on sshdev"):
            t.push(files, "b")
        remote = Path(t.remote_path("b"))
        assert list(remote.iterdir()) == []
        monkeypatch.setattr(paramiko.SFTPClient, "put", real_put)
        assert t.push(files, "b").files_sent == 1
    assert [p.name for p in remote.iterdir()] == ["big.bin"]
    assert not any(p.name.endswith(PART_SUFFIX) for p in remote.iterdir())


def test_an_upload_over_a_link_gone_silent_fails_instead_of_hanging(ssh_device, tmp_path, monkeypatch):
    import paramiko

    files = write_files(tmp_path, {"big.bin": os.urandom(16 << 20)})  # far more than SSH's window
    device = ssh_device.device.model_copy(update={"connect_timeout_s": 1})
    real_put = paramiko.SFTPClient.put
    frozen_pids: list[int] = []

    def put_as_the_device_goes_silent(self, *args, **kwargs):
        # The device stops answering just as the upload starts; the TCP link itself stays up.
        frozen_pids.extend(session_processes(ssh_device))
        for pid in frozen_pids:
            os.kill(pid, signal.SIGSTOP)
        return real_put(self, *args, **kwargs)

    with open_transport(device) as t:
        assert t.sftp().get_channel().gettimeout() == t.sftp_stall_s == 3
        monkeypatch.setattr(paramiko.SFTPClient, "put", put_as_the_device_goes_silent)
        try:
            with pytest.raises(DeviceError, match=r"^SFTP to sshdev stalled: no progress for 3 s while writing ") as err:
                t.push(files, "b")
        finally:
            for pid in frozen_pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        assert frozen_pids and "check the network link" in err.value.hint
        monkeypatch.setattr(paramiko.SFTPClient, "put", real_put)
        assert t.push(files, "b").files_sent == 1  # once it answers again, a fresh SFTP session works
    assert (Path(t.remote_path("b")) / "big.bin").read_bytes() == files["big.bin"].read_bytes()


def session_processes(ssh_device) -> list[int]:
    """The pids of the test sshd's children: the sessions serving the connections open now."""
    server_pid = int((ssh_device.sshd.root / "sshd.pid").read_text())
    children, frontier = [], [server_pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            for child in (task / "children").read_text().split():
                children.append(int(child))
                frontier.append(int(child))
    return children


def test_ssh_config_alias_supplies_host_port_user_and_key(sshd, device_python, ssh_home):
    (ssh_home / ".ssh" / "config").write_text(
        f"Host pi-alias\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n  IdentityFile {sshd.client_key}\n"
    )
    (ssh_home / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line + "\n")
    device = inv.make_device(name="pi", host="pi-alias", python=device_python, workdir=str(ssh_home / "w"))
    with open_transport(device) as t:
        assert isinstance(t, SshTransport)
        assert t.endpoint.where == f"{sshd.user}@{sshd.host}:{sshd.port}"
        assert t.run(["echo", "via alias"], timeout=30).stdout == "via alias\n"


def test_relative_workdir_is_under_the_login_home(ssh_device):
    device = ssh_device.device.model_copy(update={"workdir": ".cache/edgepack-test-relative"})
    with open_transport(device) as t:
        home = t.sftp().normalize(".")
        assert t.workdir == f"{home}/.cache/edgepack-test-relative"
        assert t.run(["pwd"], timeout=30).stdout.strip() == t.workdir
        t.run(["rmdir", t.workdir], timeout=30)  # leave the real home as it was


def test_device_python_has_the_runtimes_but_not_tensorflow_or_edgepack(ssh_device):
    code = (
        "import importlib.util, json, numpy, onnxruntime, tflite_runtime.interpreter as tfl; "
        "print(json.dumps({'numpy': numpy.__version__, 'ort': onnxruntime.__version__, "
        "'tf': importlib.util.find_spec('tensorflow') is not None, "
        "'edgepack': importlib.util.find_spec('edgepack') is not None}))"
    )
    with open_transport(ssh_device.device) as t:
        result = t.run([t.python, "-c", code], timeout=120)
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["numpy"].startswith("1.") and found["ort"]
    assert found["tf"] is False and found["edgepack"] is False


def test_probe_reports_the_device(ssh_device):
    with open_transport(ssh_device.device) as t:
        info = probe(t)
    runtimes = {r.name: r for r in info.runtimes}
    assert info.arch == os.uname().machine and info.python.startswith("3.")
    assert runtimes["tflite_runtime"].ok and runtimes["onnxruntime"].ok and runtimes["numpy"].ok
    assert not runtimes["tensorflow"].ok and "tensorflow" in runtimes["tensorflow"].error
    assert info.disk_free_bytes > 0 and info.memory_available_bytes > 0
    assert info.workdir == ssh_device.device.workdir


def test_cli_check_reports_the_sshd_device(ssh_device):
    result = cli("devices", "check", "sshdev", "--inventory", str(ssh_device.inventory))
    assert result.exit_code == 0, result.output
    for text in ("tflite_runtime", "2.14", "onnxruntime", "not usable", os.uname().machine, "free memory"):
        assert text in result.output
    as_json = cli("devices", "check", "sshdev", "--json", "--inventory", str(ssh_device.inventory))
    assert json.loads(as_json.stdout)["arch"] == os.uname().machine


def test_cli_check_of_an_untrusted_device_exits_2_with_the_hint(sshd, ssh_home, tmp_path):
    inventory = tmp_path / "devices.yaml"
    inv.add_device(untrusted_device(sshd, ssh_home), inventory)
    result = cli("devices", "check", "box", "--inventory", str(inventory))
    assert result.exit_code == 2
    assert "unknown host key" in result.output and "edgepack devices trust box" in result.output
    assert "Traceback" not in result.output
