"""Real components for the integration tests: an OpenSSH server and a "device" Python environment.

`sshd` starts /usr/sbin/sshd on 127.0.0.1 and a free port with its own host key and one
authorized client key. `device_python` is a separate virtualenv (``<repo>/.cache/device-env``)
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
    from edgepack.device.hostkeys import known_hosts_path

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
