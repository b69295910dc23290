"""Devices as they are in the field: a board without SFTP, behind a jump host, against real OpenSSH servers.

The gateway (127.0.0.1) forwards TCP and logs each forward; the board (127.0.0.2) has no SFTP
subsystem and refuses forwarding itself. Pushes go over exec channels through the gateway.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app
from edgepack.device import inventory as inv
from edgepack.device.connect import open_transport
from edgepack.device.ssh import known_hosts_path
from edgepack.device.transport import PART_SUFFIX
from edgepack.errors import DeviceError
from tests.integration.sshd import free_port, keygen, running_sshd, session_pids, ssh_fingerprint

pytestmark = pytest.mark.integration
runner = CliRunner()


def cli(*args: str, input: str | None = None):
    result = runner.invoke(app, list(args), input=input)
    assert "Traceback" not in result.output
    return result


def write_files(root: Path, files: dict[str, bytes]) -> dict[str, Path]:
    out = {}
    for name, content in files.items():
        path = root / name.replace("/", "__")
        path.write_bytes(content)
        out[name] = path
    return out


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def eventually_empty(path: Path, seconds: float = 15) -> list[str]:
    """The files under PATH once the device has cleaned up (it does so when its sshd notices), or those left."""
    deadline = time.monotonic() + seconds
    while files_under(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    return files_under(path)


def test_push_and_run_through_the_jump_host_on_a_board_without_sftp(field_device, tmp_path):
    files = write_files(tmp_path, {"model.bin": os.urandom(3_000_000), "agent.py": b"import sys\nprint('agent', sys.argv[1:])\n"})
    files["agent.py"].chmod(0o750)
    before = field_device.forwards()
    with open_transport(field_device.device) as t:
        assert t.push_method == "exec"
        assert t.way == f"via gw ({field_device.gateway.user}@127.0.0.1:{field_device.gateway.port})"
        pushed = t.push(files, "bundles/abc")
        result = t.run([t.python, t.remote_path("bundles/abc", "agent.py"), "a b", "$HOME"], timeout=60)
        again = t.push(files, "bundles/abc")
    assert field_device.forwards() == before + 1  # one connection, through the gateway
    assert (pushed.files_sent, pushed.bytes_sent) == (2, 3_000_000 + files["agent.py"].stat().st_size)
    assert (again.files_sent, again.bytes_sent, again.files_skipped) == (0, 0, 2)
    assert result.exit_code == 0 and result.stdout == "agent ['a b', '$HOME']\n"
    remote = Path(pushed.remote_dir)
    assert files_under(remote) == ["agent.py", "model.bin"]
    assert (remote / "model.bin").read_bytes() == files["model.bin"].read_bytes()
    assert (remote / "agent.py").stat().st_mode & 0o777 == 0o750


@pytest.mark.slow
def test_bench_through_the_jump_host_and_the_second_sends_nothing(field_device, digits_bundles):
    from edgepack.benchmark import BenchOptions, bench

    quick = BenchOptions(runs=20, warmup=2, min_seconds=0, cold_loads=2)
    before = field_device.forwards()
    first = bench(digits_bundles["fp32"], "board", quick, inventory=field_device.inventory)
    second = bench(digits_bundles["fp32"], "board", quick, inventory=field_device.inventory)
    assert first.report.ok and first.report.runtime.name == "tflite_runtime"
    assert first.push.files_sent >= 4 and first.push.files_skipped == 0 and first.push.bytes_sent > 0
    assert (second.push.files_sent, second.push.bytes_sent, second.push.files_skipped) == (0, 0, first.push.files_sent)
    assert field_device.forwards() == before + 2
    workdir = Path(field_device.device.workdir)
    assert not [p for p in workdir.rglob("*") if p.name.endswith(PART_SUFFIX)]


def test_cli_check_says_the_board_gets_exec_pushes_through_the_gateway(field_device):
    result = cli("devices", "check", "board", "--inventory", str(field_device.inventory))
    assert result.exit_code == 0, result.output
    assert "exec (no SFTP on the device" in result.output and "via gw" in result.output
    as_json = json.loads(cli("devices", "check", "board", "--json", "--inventory", str(field_device.inventory)).stdout)
    assert as_json["push_method"] == "exec" and as_json["way"].startswith("via gw (")
    listed = cli("devices", "list", "--inventory", str(field_device.inventory))
    assert "board" in listed.output and "gw" in listed.output


def test_a_chain_of_jump_hosts_from_the_ssh_config(field_device, ssh_home, tmp_path):
    gw = field_device.gateway
    with (ssh_home / ".ssh" / "config").open("a") as fh:
        fh.write(f"Host gw2\n  HostName {gw.host}\n  Port {gw.port}\n  User {gw.user}\n  IdentityFile {gw.client_key}\n  ProxyJump gw\n"
                 f"Host board-alias\n  HostName {field_device.board.host}\n  Port {field_device.board.port}\n  ProxyJump gw2\n")
    device = field_device.device.model_copy(update={"host": "board-alias", "port": None, "jump": None})
    log = gw.log.read_text(errors="replace")
    hops_before = log.count(f"target {gw.host} port {gw.port}")
    before = field_device.forwards()
    with open_transport(device) as t:
        assert [h.label for h in t.route.jumps] == ["gw", "gw2"]
        assert t.run(["echo", "two hops"], timeout=30).stdout == "two hops\n"
    assert gw.log.read_text(errors="replace").count(f"target {gw.host} port {gw.port}") == hops_before + 1
    assert field_device.forwards() == before + 1


def test_proxycommand_from_the_ssh_config(field_device, ssh_home, tmp_path):
    gw, board = field_device.gateway, field_device.board
    (tmp_path / "gw_known_hosts").write_text(gw.known_hosts_line + "\n")
    proxy = (f"ssh -F /dev/null -i {gw.client_key} -o BatchMode=yes -o StrictHostKeyChecking=yes "
             f"-o UserKnownHostsFile={tmp_path / 'gw_known_hosts'} -p {gw.port} -W %h:%p {gw.user}@{gw.host}")
    with (ssh_home / ".ssh" / "config").open("a") as fh:
        fh.write(f"Host board-pc\n  HostName {board.host}\n  Port {board.port}\n  ProxyCommand {proxy}\n"
                 f"Host board-broken\n  HostName {board.host}\n  Port {board.port}\n"
                 "  ProxyCommand sh -c \"echo 'no route to the lab' >&2; exit 7\"\n")
    device = field_device.device.model_copy(update={"host": "board-pc", "port": None, "jump": None})
    before = field_device.forwards()
    files = write_files(tmp_path, {"m.bin": os.urandom(100_000)})
    with open_transport(device) as t:
        assert t.way == "via ProxyCommand" and t.push_method == "exec"
        assert t.push(files, "pc").files_sent == 1
    assert field_device.forwards() == before + 1
    broken = device.model_copy(update={"host": "board-broken"})
    with pytest.raises(DeviceError, match=r"^the ProxyCommand on the way to board exited with 7: no route to the lab$"):
        open_transport(broken)


def test_an_unknown_gateway_key_is_refused_with_its_fingerprint_and_trust_covers_each_host(field_device, ssh_home):
    gw = field_device.gateway
    system = ssh_home / ".ssh" / "known_hosts"
    system.write_text(field_device.board.known_hosts_line + "\n")
    before = field_device.forwards()
    with pytest.raises(DeviceError) as err:
        open_transport(field_device.device)
    assert err.value.message.startswith(f"unknown host key for {gw.known_hosts_name} (jump host gw on the way to board): ")
    assert ssh_fingerprint(gw.host_key_pub) in err.value.message
    assert "edgepack devices trust board" in err.value.hint and "on gw" in err.value.hint
    assert field_device.forwards() == before  # never went past the gateway
    assert system.read_text() == field_device.board.known_hosts_line + "\n" and not known_hosts_path().exists()

    asked = cli("devices", "trust", "board", "--inventory", str(field_device.inventory), input="n\n")
    assert asked.exit_code == 2 and ssh_fingerprint(gw.host_key_pub) in asked.output and "jump host gw" in asked.output
    assert not known_hosts_path().exists()

    trusted = cli("devices", "trust", "board", "--yes", "--inventory", str(field_device.inventory))
    assert trusted.exit_code == 0, trusted.output
    assert f"trusted {gw.known_hosts_name} (jump host gw)" in trusted.output
    assert f"{field_device.board.known_hosts_name} is already trusted" in trusted.output
    assert known_hosts_path().read_text().split() == gw.known_hosts_line.split()
    with open_transport(field_device.device) as t:
        assert t.run(["echo", "ok"], timeout=30).stdout == "ok\n"


def test_an_unknown_board_key_behind_the_gateway_is_refused_then_trusted_through_it(field_device, ssh_home):
    board = field_device.board
    (ssh_home / ".ssh" / "known_hosts").write_text(field_device.gateway.known_hosts_line + "\n")
    with pytest.raises(DeviceError) as err:
        open_transport(field_device.device)
    assert f"unknown host key for {board.known_hosts_name} (device board)" in err.value.message
    assert ssh_fingerprint(board.host_key_pub) in err.value.message
    trusted = cli("devices", "trust", "board", "--yes", "--inventory", str(field_device.inventory))
    assert trusted.exit_code == 0, trusted.output
    assert f"trusted {board.known_hosts_name}: ssh-ed25519 {ssh_fingerprint(board.host_key_pub)}" in trusted.output
    with open_transport(field_device.device) as t:
        assert t.run(["echo", "ok"], timeout=30).stdout == "ok\n"


def test_a_changed_gateway_key_is_refused(field_device, ssh_home, tmp_path):
    impostor = keygen(tmp_path / "impostor")
    line = " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    (ssh_home / ".ssh" / "known_hosts").write_text(
        f"{field_device.gateway.known_hosts_name} {line}\n{field_device.board.known_hosts_line}\n"
    )
    with pytest.raises(DeviceError) as err:
        open_transport(field_device.device)
    assert "(jump host gw on the way to board) has CHANGED" in err.value.message and "attack" in err.value.message
    assert ssh_fingerprint(field_device.gateway.host_key_pub) in err.value.message
    refused = cli("devices", "trust", "board", "--yes", "--inventory", str(field_device.inventory))
    assert refused.exit_code == 2 and "already has a different key" in refused.output
    assert not known_hosts_path().exists()


def test_a_gateway_dropped_mid_push_leaves_nothing_on_the_board(field_device, tmp_path, monkeypatch):
    files = write_files(tmp_path, {"big.bin": os.urandom(24 << 20)})
    real_sendall = paramiko.Channel.sendall
    calls = []

    def drop_the_gateway_midway(self, data):
        calls.append(len(data))
        if len(calls) == 20:  # 2.5 MB in: every session on the gateway dies at once
            for pid in session_pids(field_device.gateway):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return real_sendall(self, data)

    with open_transport(field_device.device) as t:
        remote = Path(t.remote_path("drop"))
        monkeypatch.setattr(paramiko.Channel, "sendall", drop_the_gateway_midway)
        with pytest.raises(DeviceError, match=r"^lost the connection to board while writing .*big\.bin") as err:
            t.push(files, "drop")
        assert "jump hosts" in err.value.hint
    monkeypatch.setattr(paramiko.Channel, "sendall", real_sendall)
    assert eventually_empty(remote) == []
    with open_transport(field_device.device) as t:
        assert t.push(files, "drop").files_sent == 1
    assert files_under(remote) == ["big.bin"]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), RuntimeError("a bug while sending")], ids=repr)
def test_an_interrupted_exec_push_leaves_no_part_file(field_device, tmp_path, monkeypatch, interruption):
    # The next file's session is already waiting when the first is cut: it goes too.
    files = write_files(tmp_path, {"big.bin": os.urandom(4 << 20), "sub/next.bin": os.urandom(1 << 20)})
    real_sendall = paramiko.Channel.sendall
    calls = []

    def interrupt_midway(self, data):
        calls.append(len(data))
        if len(calls) == 8:
            raise interruption
        return real_sendall(self, data)

    with open_transport(field_device.device) as t:
        remote = Path(t.remote_path("cut"))
        monkeypatch.setattr(paramiko.Channel, "sendall", interrupt_midway)
        with pytest.raises(type(interruption)):
            t.push(files, "cut")
        assert files_under(remote) == []  # the device's script removed its part file before the push returned
        monkeypatch.setattr(paramiko.Channel, "sendall", real_sendall)
        assert t.push(files, "cut").files_sent == 2
    assert files_under(remote) == ["big.bin", "sub/next.bin"]


def test_an_exec_push_over_a_link_gone_silent_fails_instead_of_hanging(field_device, tmp_path, monkeypatch):
    files = write_files(tmp_path, {"big.bin": os.urandom(16 << 20)})  # far more than SSH's window
    device = field_device.device.model_copy(update={"jump": "none", "connect_timeout_s": 1})  # straight to the board
    real_sendall = paramiko.Channel.sendall
    frozen: list[int] = []

    def send_as_the_board_goes_silent(self, data):
        # The board stops answering a few blocks into the file; the TCP link itself stays up.
        if not frozen:
            frozen.extend(session_pids(field_device.board))
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
        return real_sendall(self, data)

    with open_transport(device) as t:
        assert t.way == "direct" and t.push_method == "exec"
        monkeypatch.setattr(paramiko.Channel, "sendall", send_as_the_board_goes_silent)
        try:
            with pytest.raises(DeviceError, match=r"^exec push to board stalled: no progress for 3 s while writing ") as err:
                t.push(files, "silent")
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        assert frozen and "check the network link" in err.value.hint
        monkeypatch.setattr(paramiko.Channel, "sendall", real_sendall)
        assert t.push(files, "silent").files_sent == 1  # once it answers again, the same connection works
    remote = Path(t.remote_path("silent"))
    assert (remote / "big.bin").read_bytes() == files["big.bin"].read_bytes()
    deadline = time.monotonic() + 10  # the stalled upload's script removes its part file once it runs again
    while files_under(remote) != ["big.bin"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert files_under(remote) == ["big.bin"]


def test_a_board_without_sha256sum_or_python_gives_one_clear_line_and_sha256sum_alone_is_enough(
    board_sshd, ssh_home, tmp_path
):
    tools = tmp_path / "bin"  # the board's PATH: a shell and a few tools, no sha256sum, no Python
    tools.mkdir()
    for tool in ("sh", "cat", "wc", "tr", "mkdir", "mv", "chmod", "rm", "pwd", "find"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        os.symlink(found if found.startswith("/") else f"/bin/{tool}", tools / tool)
    with running_sshd(tmp_path / "bare-board", host="127.0.0.2", sftp=False, extra=[f"SetEnv PATH={tools}"]) as bare:
        (ssh_home / ".ssh" / "known_hosts").write_text(bare.known_hosts_line + "\n")
        device = inv.make_device(name="bare", host=bare.host, port=bare.port, user=bare.user, key=str(bare.client_key),
                                 python="/opt/nowhere/python3", workdir=str(tmp_path / "bare-work"), connect_timeout_s=5)
        files = write_files(tmp_path, {"m.bin": os.urandom(50_000)})
        with open_transport(device) as t:
            with pytest.raises(DeviceError) as err:
                t.push(files, "b")
        assert err.value.message == (
            "cannot push to bare without SFTP: the device has neither sha256sum nor Python ('/opt/nowhere/python3') "
            "to check the files it receives"
        )
        assert "sha256sum" in err.value.hint and "--python PATH" in err.value.hint
        os.symlink(subprocess.run(["sh", "-c", "command -v sha256sum"], capture_output=True, text=True).stdout.strip(),
                   tools / "sha256sum")
        with open_transport(device) as t:
            first, again = t.push(files, "b"), t.push(files, "b")
        assert (first.files_sent, again.files_sent, again.bytes_sent) == (1, 0, 0)
        assert files_under(tmp_path / "bare-work" / "b") == ["m.bin"]


@pytest.mark.parametrize("case", ["gateway down", "auth refused at the gateway", "board unreachable from the gateway",
                                  "forwarding refused"])
def test_cli_errors_name_the_host_on_the_way_that_failed(field_device, ssh_home, tmp_path, case):
    gw, board = field_device.gateway, field_device.board
    config = ssh_home / ".ssh" / "config"
    device = field_device.device
    if case == "gateway down":
        port = free_port()
        config.write_text(config.read_text().replace(f"Port {gw.port}", f"Port {port}"))
        expected = f"error: cannot reach jump host gw (on the way to board) at 127.0.0.1:{port}: connection refused"
    elif case == "auth refused at the gateway":
        config.write_text(config.read_text().replace(str(gw.client_key), str(keygen(tmp_path / "stranger"))))
        expected = f"error: authentication refused for {gw.user}@127.0.0.1:{gw.port} (jump host gw on the way to board)"
    elif case == "board unreachable from the gateway":
        port = free_port("127.0.0.2")
        device = device.model_copy(update={"name": "board2", "port": port})
        expected = f"error: device board2 is unreachable from jump host gw: 127.0.0.2:{port}: Connect failed"
    else:  # the board itself as the jump host: it does not forward
        config.write_text(config.read_text() + f"Host nofwd\n  HostName {board.host}\n  Port {board.port}\n"
                          f"  IdentityFile {board.client_key}\n")
        device = device.model_copy(update={"name": "board3", "jump": "nofwd"})
        expected = "error: jump host nofwd refused to forward to device board3 at 127.0.0.2"
    if device.name != "board":
        inv.add_device(device, field_device.inventory)
    result = cli("devices", "check", device.name, "--inventory", str(field_device.inventory))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(expected), result.output
    assert len(lines) == 2 and lines[1].startswith("hint: ")


def test_cli_add_refuses_an_unknown_jump_host_alias_and_a_bad_jump(field_device):
    inventory = str(field_device.inventory)
    typo = cli("devices", "add", "pi", "--host", "10.9.8.7", "--jump", "gwx", "--inventory", inventory)
    assert typo.exit_code == 2
    assert "unknown jump host 'gwx' for device pi" in typo.output and "did you mean gw?" in typo.output
    bad = cli("devices", "add", "pi", "--host", "10.9.8.7", "--jump", "gw:0", "--inventory", inventory)
    assert bad.exit_code == 2 and "bad jump host 'gw:0'" in bad.output
    assert "pi:" not in field_device.inventory.read_text()
    good = cli("devices", "add", "pi", "--host", "10.9.8.7", "-J", "gw,pi@10.9.8.1:2222", "--inventory", inventory)
    assert good.exit_code == 0, good.output
    assert "via gw,pi@10.9.8.1:2222" in good.output
    assert inv.get_device("pi", field_device.inventory).jump == "gw,pi@10.9.8.1:2222"


def test_a_relative_workdir_on_a_board_without_sftp_is_under_the_login_home(field_device):
    device = field_device.device.model_copy(update={"workdir": ".cache/edgepack-field-relative"})
    with open_transport(device) as t:
        home = t.run(["sh", "-c", "cd && pwd -P"], timeout=30).stdout.strip()
        assert t.workdir == f"{home}/.cache/edgepack-field-relative"
        assert t.run(["pwd"], timeout=30).stdout.strip() == t.workdir
        t.run(["rmdir", t.workdir], timeout=30)  # leave the real home as it was
