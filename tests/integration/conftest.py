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

import fcntl
import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEVICE_ENV = REPO / ".cache" / "device-env"
# numpy<2 because tflite-runtime 2.14 (the last release, cp311 at most) is built against numpy 1.x;
# onnxruntime 1.31 still accepts numpy>=1.21.6 and runs with 1.26 (checked on Python 3.11).
DEVICE_REQUIREMENTS = ["numpy>=1.26,<2", "tflite-runtime>=2.14,<2.15", "onnxruntime>=1.31,<1.32"]
_DEVICE_ENV_CHECK = (
    "import importlib.util, numpy, onnxruntime, tflite_runtime.interpreter; "
    "assert numpy.__version__.startswith('1.'), numpy.__version__; "
    "assert importlib.util.find_spec('tensorflow') is None, 'tensorflow is installed'; "
    "assert importlib.util.find_spec('edgepack') is None, 'edgepack is importable'"
)
SSHD = "/usr/sbin/sshd"


def _unavailable(reason: str):
    """Fail in CI, skip elsewhere: an integration test never skips in CI."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: integration tests may not skip)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 with nothing listening on it (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str = "edgepack-test") -> Path:
    """Create an ed25519 key pair without a passphrase at PATH (and PATH.pub)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def ssh_fingerprint(pub: Path) -> str:
    """Return OpenSSH's own SHA256 fingerprint of a public key file (independent of edgepack)."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], check=True, capture_output=True, text=True)
    return out.stdout.split()[1]


@dataclass
class SshdServer:
    host: str
    port: int
    user: str
    client_key: Path  # private key whose public half is authorized
    host_key_line: str  # "ssh-ed25519 AAAA..." (the server's public host key)
    host_key_pub: Path
    root: Path
    log: Path

    @property
    def known_hosts_name(self) -> str:
        return f"[{self.host}]:{self.port}"

    @property
    def known_hosts_line(self) -> str:
        """A known_hosts line that trusts this server."""
        return f"{self.known_hosts_name} {self.host_key_line}"

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SshdServer:
    """A real OpenSSH server on 127.0.0.1 and a free port, key authentication only."""
    if not (os.path.isfile(SSHD) and os.access(SSHD, os.X_OK)) or shutil.which("ssh-keygen") is None:
        _unavailable(f"{SSHD} or ssh-keygen is missing: apt-get install -y openssh-server openssh-client")
    root = tmp_path_factory.mktemp("sshd")
    host_key = keygen(root / "ssh_host_ed25519_key", "edgepack-test-host")
    client_key = keygen(root / "client_key", "edgepack-test-client")
    authorized = root / "authorized_keys"
    authorized.write_text((root / "client_key.pub").read_text())
    authorized.chmod(0o600)
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    except OSError as exc:
        _unavailable(f"cannot create /run/sshd for sshd: {exc.strerror}")
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {root / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "Subsystem sftp internal-sftp",
                "MaxStartups 100:30:200",
                "MaxSessions 100",
                "PrintMotd no",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    test = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if test.returncode != 0:
        _unavailable(f"sshd rejects the test configuration: {test.stderr.strip()}")
    log = root / "sshd.log"
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log_fh, stderr=subprocess.STDOUT)
    server = SshdServer(
        host="127.0.0.1",
        port=port,
        user=getpass.getuser(),
        client_key=client_key,
        host_key_line=" ".join((root / "ssh_host_ed25519_key.pub").read_text().split()[:2]),
        host_key_pub=root / "ssh_host_ed25519_key.pub",
        root=root,
        log=log,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                _unavailable(f"sshd exited with {proc.returncode}: {server.log_tail()}")
            try:
                with socket.create_connection((server.host, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    _unavailable(f"sshd did not listen on port {port} within 15 s: {server.log_tail()}")
                time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _env_ok(python: Path) -> tuple[bool, str]:
    if not python.exists():
        return False, "not created"
    out = subprocess.run([str(python), "-c", _DEVICE_ENV_CHECK], capture_output=True, text=True, cwd="/")
    return out.returncode == 0, (out.stderr.strip().splitlines() or [""])[-1]


@pytest.fixture(scope="session")
def device_python() -> str:
    """The interpreter of the "device" virtualenv: numpy<2, tflite-runtime, onnxruntime; no TensorFlow, no edgepack."""
    python = DEVICE_ENV / "bin" / "python"
    DEVICE_ENV.parent.mkdir(parents=True, exist_ok=True)
    # Other test runs in the same tree may build it at the same time: one builds, the rest wait.
    with open(DEVICE_ENV.parent / "device-env.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ok, why = _env_ok(python)
        if ok:
            return str(python)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(DEVICE_ENV)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *DEVICE_REQUIREMENTS],
        ]
        for step in steps:
            out = subprocess.run(step, capture_output=True, text=True, env=env, cwd="/")
            if out.returncode != 0:
                tail = " ".join(out.stderr.strip().splitlines()[-3:])
                _unavailable(f"cannot build the device environment ({' '.join(step[:4])} ...): {tail}")
        ok, why = _env_ok(python)
        if not ok:
            _unavailable(f"the device environment at {DEVICE_ENV} is not usable: {why}")
        return str(python)


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
    directory) and ``.inventory`` (the inventory file that holds it).
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
    return DeviceInInventory(device, path)


@dataclass
class DeviceInInventory:
    device: object  # edgepack.device.inventory.Device
    inventory: Path
