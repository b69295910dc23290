"""SshTransport's errors that need no SSH server: a port that does not speak SSH, broken known_hosts files.

Each reaches the user as one DeviceError line with a hint, never as a traceback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app
from edgepack.device import inventory as inv
from edgepack.device.connect import open_transport
from edgepack.device.ssh import known_hosts_path, trust
from edgepack.errors import DeviceError


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HOME and user config directory, no ssh-agent, no EDGEPACK_DEBUG."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("EDGEPACK_DEBUG", raising=False)
    return home


@contextlib.contextmanager
def not_ssh_server(greeting: bytes):
    """A TCP server on 127.0.0.1 that accepts, sends GREETING (maybe nothing) and then says nothing more."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    done, held = threading.Event(), []

    def serve():
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:  # the accept timeout: look at `done` again
                continue
            held.append(conn)
            if greeting:
                conn.sendall(greeting)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join()
        server.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize("greeting", [b"", b"HTTP/1.0 200 OK\r\n"], ids=["silent", "http"])
@pytest.mark.parametrize("command", ["check", "trust"])
def test_a_port_that_does_not_speak_ssh_prints_one_line_and_no_paramiko_traceback(home, tmp_path, greeting, command):
    inventory = tmp_path / "devices.yaml"
    with not_ssh_server(greeting) as port:
        inv.add_device(inv.make_device(name="box", host="127.0.0.1", port=port, connect_timeout_s=1), inventory)
        # A real process: paramiko logs from its own thread, through the logging module's last resort.
        yes = ["--yes"] if command == "trust" else []
        out = subprocess.run(
            [sys.executable, "-m", "edgepack", "devices", command, "box", *yes, "--inventory", str(inventory)],
            capture_output=True, text=True, env=os.environ.copy(),
        )
    assert out.returncode == 2, out.stderr
    assert f"error: no SSH answer from box at 127.0.0.1:{port} within 1 s" in out.stderr
    assert f"hint: check that port {port} is the device's SSH port" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout and "Exception (client)" not in out.stderr + out.stdout


def bad_known_hosts(path, port):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# my hosts\n[127.0.0.1]:{port} ssh-ed25519 AAAA!!not-base64\n")


@pytest.mark.parametrize("which", ["system", "edgepack"])
def test_a_malformed_known_hosts_line_is_named_with_its_file_and_line(home, tmp_path, which):
    port = 1  # never reached: the files are read before connecting
    path = home / ".ssh" / "known_hosts" if which == "system" else known_hosts_path()
    bad_known_hosts(path, port)
    device = inv.make_device(name="box", host="127.0.0.1", port=port, connect_timeout_s=1)
    for attempt in (lambda: open_transport(device), lambda: trust(device, yes=True)):
        with pytest.raises(DeviceError) as err:
            attempt()
        assert err.value.message.startswith(f"{path}:2: malformed known_hosts line (InvalidHostKey: ")
        assert f"ssh-keygen -R HOST -f {path}" in err.value.hint
    inventory = tmp_path / "devices.yaml"
    inv.add_device(device, inventory)
    result = CliRunner().invoke(app, ["devices", "check", "box", "--inventory", str(inventory)])
    assert result.exit_code == 2 and f"error: {path}:2: malformed known_hosts line" in result.output
    assert "internal error" not in result.output


def test_a_known_hosts_file_that_is_not_text_is_named(home):
    path = home / ".ssh" / "known_hosts"
    path.write_bytes(b"\xff\xfe binary junk\n")
    device = inv.make_device(name="box", host="127.0.0.1", port=1, connect_timeout_s=1)
    with pytest.raises(DeviceError, match=rf"^{path}: this known_hosts file is not UTF-8 text$"):
        open_transport(device)
