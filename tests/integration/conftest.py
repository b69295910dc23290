"""Real components for the integration tests: an OpenSSH server and a "device" Python environment.

`sshd` starts /usr/sbin/sshd on 127.0.0.1 and a free port with its own host key and one
authorized client key. `gateway_sshd` and `board_sshd` are a lab's jump host (127.0.0.1) and a
board behind it (127.0.0.2, no SFTP subsystem, no TCP forwarding); `field_device` puts them together. `device_python` is a separate virtualenv (``<repo>/.cache/device-env``)
with numpy<2, tflite-runtime and onnxruntime but neither TensorFlow nor edgepack, as on a
Raspberry Pi; it is built once and reused. `ssh_device` puts both together: an isolated HOME and
user config, the host key trusted, and a `Device` stored in a fresh inventory.

Outside CI a missing sshd (or a device environment that cannot be installed) skips with the
reason; with CI=true it fails, because an integration test never skips in CI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.sshd import SshdServer, Unavailable, device_env_python, running_sshd
from tests.unavailable import unavailable


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SshdServer:
    """A real OpenSSH server on 127.0.0.1 and a free port, key authentication only."""
    try:
        with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
            yield server
    except Unavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def gateway_sshd(tmp_path_factory) -> SshdServer:
    """A jump host: a real OpenSSH server on 127.0.0.1 that forwards TCP, logging each forward (LogLevel DEBUG1)."""
    try:
        with running_sshd(tmp_path_factory.mktemp("gateway"), log_level="DEBUG1") as server:
            yield server
    except Unavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def board_sshd(tmp_path_factory) -> SshdServer:
    """A board as many are in the field: OpenSSH on 127.0.0.2 without an SFTP subsystem and without TCP forwarding."""
    try:
        with running_sshd(tmp_path_factory.mktemp("board"), host="127.0.0.2", sftp=False, forwarding=False) as server:
            yield server
    except Unavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def device_python() -> str:
    """The interpreter of the "device" virtualenv: numpy<2, tflite-runtime, onnxruntime; no TensorFlow, no edgepack."""
    try:
        return device_env_python()
    except Unavailable as exc:
        unavailable(str(exc))


@pytest.fixture
def ssh_home(tmp_path, monkeypatch) -> Path:
    """An empty HOME (no ~/.ssh/known_hosts, config or keys) and no ssh-agent, for one test."""
    home = tmp_path / "ssh-home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    if not os.environ.get("XDG_CONFIG_HOME"):
        monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home


@pytest.fixture
def ssh_device(sshd, device_python, ssh_home, tmp_path):
    """The test sshd as a trusted device using the device Python, stored in a fresh inventory.

    Returns a `DeviceInInventory`: ``.device`` (named ``sshdev``, its workdir an absolute temporary
    directory), ``.inventory`` (the inventory file that holds it) and ``.sshd`` (the server).
    """
    from edgepack.device import inventory as inv
    from edgepack.device.ssh import known_hosts_path

    known = known_hosts_path()
    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text(sshd.known_hosts_line + "\n")
    device = inv.make_device(
        name="sshdev",
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        key=str(sshd.client_key),
        python=device_python,
        workdir=str(tmp_path / "device-work"),
        connect_timeout_s=5,
    )
    path = tmp_path / "devices.yaml"
    inv.add_device(device, path)
    return DeviceInInventory(device, path, sshd)


@dataclass
class DeviceInInventory:
    device: object  # edgepack.device.spec.Device
    inventory: Path
    sshd: SshdServer


@pytest.fixture
def field_device(gateway_sshd, board_sshd, device_python, ssh_home, tmp_path):
    """The board behind the gateway, as a trusted device named ``board`` with ``jump: gw`` in a fresh inventory.

    ``gw`` is an alias in ~/.ssh/config (HostName, Port, User, IdentityFile); both host keys are in
    ~/.ssh/known_hosts. Returns a `FieldDevice`.
    """
    from edgepack.device import inventory as inv

    ssh = ssh_home / ".ssh"
    (ssh / "config").write_text(
        f"Host gw\n  HostName {gateway_sshd.host}\n  Port {gateway_sshd.port}\n  User {gateway_sshd.user}\n"
        f"  IdentityFile {gateway_sshd.client_key}\n"
    )
    (ssh / "known_hosts").write_text(f"{gateway_sshd.known_hosts_line}\n{board_sshd.known_hosts_line}\n")
    device = inv.make_device(
        name="board",
        host=board_sshd.host,
        port=board_sshd.port,
        user=board_sshd.user,
        key=str(board_sshd.client_key),
        jump="gw",
        python=device_python,
        workdir=str(tmp_path / "board-work"),
        connect_timeout_s=5,
    )
    path = tmp_path / "devices.yaml"
    inv.add_device(device, path)
    return FieldDevice(device, path, gateway_sshd, board_sshd)


@dataclass
class FieldDevice:
    device: object  # edgepack.device.spec.Device
    inventory: Path
    gateway: SshdServer
    board: SshdServer

    def forwards(self) -> int:
        """How many connections the gateway has forwarded to the board so far (from its log)."""
        text = self.gateway.log.read_text(errors="replace")
        return text.count(f"target {self.board.host} port {self.board.port}")
