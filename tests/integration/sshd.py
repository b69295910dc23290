"""An OpenSSH server on 127.0.0.1 and a "device" Python environment, for tests and benchmarks.

Plain functions (no pytest), so that the benchmark scripts start the same servers the
integration tests use. Where a component cannot be had, they raise `Unavailable` with the reason.
"""

from __future__ import annotations

import contextlib
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
from typing import Iterator

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


class Unavailable(Exception):
    """A real component the caller needs cannot be had here; the message says why."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on HOST (a loopback address) with nothing listening on it (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
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


@contextlib.contextmanager
def running_sshd(
    root: Path,
    host: str = "127.0.0.1",
    sftp: bool = True,
    forwarding: bool = True,
    log_level: str = "VERBOSE",
    authorized: list[Path] = (),
    extra: list[str] = (),
) -> Iterator[SshdServer]:
    """Run a real OpenSSH server on HOST (a loopback address) and a free port, key authentication only.

    Its files live in ROOT. Without SFTP it has no SFTP subsystem (as on many embedded boards);
    without FORWARDING it refuses TCP forwarding. AUTHORIZED adds public key files to its own
    client key's; EXTRA lines go at the end of its sshd_config.
    """
    if not (os.path.isfile(SSHD) and os.access(SSHD, os.X_OK)) or shutil.which("ssh-keygen") is None:
        raise Unavailable(f"{SSHD} or ssh-keygen is missing: apt-get install -y openssh-server openssh-client")
    root.mkdir(parents=True, exist_ok=True)
    host_key = keygen(root / "ssh_host_ed25519_key", "edgepack-test-host")
    client_key = keygen(root / "client_key", "edgepack-test-client")
    authorized_keys = root / "authorized_keys"
    authorized_keys.write_text("".join(p.read_text() for p in [root / "client_key.pub", *authorized]))
    authorized_keys.chmod(0o600)
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    except OSError as exc:
        raise Unavailable(f"cannot create /run/sshd for sshd: {exc.strerror}")
    try:
        port = free_port(host)
    except OSError as exc:
        raise Unavailable(f"cannot listen on {host}: {exc.strerror or exc}")
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                f"ListenAddress {host}",
                f"HostKey {host_key}",
                f"PidFile {root / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized_keys}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                *(["Subsystem sftp internal-sftp"] if sftp else []),
                f"AllowTcpForwarding {'yes' if forwarding else 'no'}",
                "MaxStartups 100:30:200",
                "MaxSessions 100",
                "PrintMotd no",
                f"LogLevel {log_level}",
                *extra,
                "",
            ]
        )
    )
    test = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if test.returncode != 0:
        raise Unavailable(f"sshd rejects the test configuration: {test.stderr.strip()}")
    log = root / "sshd.log"
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log_fh, stderr=subprocess.STDOUT)
    server = SshdServer(
        host=host,
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
                raise Unavailable(f"sshd exited with {proc.returncode}: {server.log_tail()}")
            try:
                with socket.create_connection((server.host, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise Unavailable(f"sshd did not listen on port {port} within 15 s: {server.log_tail()}")
                time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def session_pids(server: SshdServer) -> list[int]:
    """Return the pids of SERVER's children: the sessions serving the connections open now."""
    server_pid = int((server.root / "sshd.pid").read_text())
    children, frontier = [], [server_pid]
    while frontier:
        parent = frontier.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                for child in (task / "children").read_text().split():
                    children.append(int(child))
                    frontier.append(int(child))
    return children


def _env_ok(python: Path) -> tuple[bool, str]:
    if not python.exists():
        return False, "not created"
    out = subprocess.run([str(python), "-c", _DEVICE_ENV_CHECK], capture_output=True, text=True, cwd="/")
    return out.returncode == 0, (out.stderr.strip().splitlines() or [""])[-1]


def device_env_python() -> str:
    """Return the interpreter of the "device" virtualenv (numpy<2, tflite-runtime, onnxruntime; no
    TensorFlow, no edgepack), building it once."""
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
                raise Unavailable(f"cannot build the device environment ({' '.join(step[:4])} ...): {tail}")
        ok, why = _env_ok(python)
        if not ok:
            raise Unavailable(f"the device environment at {DEVICE_ENV} is not usable: {why}")
        return str(python)
