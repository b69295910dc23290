"""known_hosts files: where they are, reading them, fingerprints, and refusing unknown or changed keys.

Host keys are checked against ``~/.ssh/known_hosts`` and edgepack's own
``<user config dir>/known_hosts``, for the device and for every jump host on the way to it.
An unknown key is refused, never added silently; a changed key is always refused.
`edgepack.device.ssh.hostkeys` fetches and trusts keys on first contact.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.device.spec import Device, config_dir
from edgepack.device.ssh.connect import Endpoint
from edgepack.errors import DeviceError

if TYPE_CHECKING:
    import paramiko


def known_hosts_path() -> Path:
    """Return edgepack's own known_hosts file (``<user config dir>/known_hosts``)."""
    return config_dir() / "known_hosts"


def system_known_hosts_path() -> Path:
    """Return the user's OpenSSH known_hosts file (``~/.ssh/known_hosts``)."""
    return Path(os.path.expanduser("~/.ssh/known_hosts"))


def fingerprint(key: paramiko.PKey) -> str:
    """Return the key's OpenSSH-style fingerprint, ``SHA256:...``."""
    import base64
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_known_hosts(client: paramiko.SSHClient) -> None:
    """Give CLIENT the keys of both known_hosts files (the system one as the system's).

    Raises:
        DeviceError: a file cannot be read, is not UTF-8, or has a malformed line.
    """
    for path, load in ((system_known_hosts_path(), client.load_system_host_keys), (known_hosts_path(), client.load_host_keys)):
        if path.is_file():
            with reading_known_hosts(path):
                load(str(path))


class RefuseUnknownKey:
    """paramiko missing-host-key policy: refuse, naming the host and the key's fingerprint.

    VIA names the jump host being connected to, when it is one on the way to the device.
    """

    def __init__(self, device: Device, via: str | None = None):
        self.device = device
        self.via = via

    def missing_host_key(self, client, hostname, key) -> None:
        name = self.device.name
        if self.via is None:
            role, check = f"device {name}", "on the device"
        else:
            role, check = f"jump host {self.via} on the way to {name}", f"on {self.via}"
        raise DeviceError(
            f"unknown host key for {hostname} ({role}): {key.get_name()} {fingerprint(key)}; refusing to connect",
            hint=f"check the fingerprint {check} (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then run "
            f"`edgepack devices trust {name}`" + ("" if self.via is None else " (it asks about each host on the way)"),
        )


def changed_key_error(exc: paramiko.BadHostKeyException, ep: Endpoint, name: str, via: str | None = None) -> DeviceError:
    """Return the DeviceError for device NAME (or its jump host VIA) at EP offering another key than the known one (EXC)."""
    where = file_holding(ep.known_hosts_name)
    role = f"device {name}" if via is None else f"jump host {via} on the way to {name}"
    again = f"`edgepack devices trust {name}`"
    return DeviceError(
        f"the host key of {ep.known_hosts_name} ({role}) has CHANGED: it now offers "
        f"{exc.key.get_name()} {fingerprint(exc.key)}, known as {fingerprint(exc.expected_key)}. "
        "This may be an attack (someone in the middle); refusing to connect",
        hint=f"if the host was reinstalled and you trust the new key, remove the old one with "
        f"`ssh-keygen -R {shlex.quote(ep.known_hosts_name)} -f {shlex.quote(str(where))}`, then run {again}",
    )


@contextlib.contextmanager
def reading_known_hosts(path: Path):
    """Turn a failure to read the known_hosts file PATH inside the block into a DeviceError.

    Raises:
        DeviceError: the file cannot be read, is not UTF-8, or has a malformed line (with its number).
    """
    try:
        yield
    except OSError as exc:
        raise DeviceError(f"{path}: cannot read this known_hosts file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DeviceError(
            f"{path}: this known_hosts file is not UTF-8 text",
            hint=f"fix or move {path}; OpenSSH writes one `HOST KEYTYPE BASE64KEY` line per key",
        ) from None
    except Exception as exc:  # paramiko's InvalidHostKey (bad base64), or a key it cannot decode
        reason = f"{type(exc).__name__}: {exc.exc}" if hasattr(exc, "exc") else f"{type(exc).__name__}: {exc}"
        raise DeviceError(
            f"{bad_known_hosts_line(path) or path}: malformed known_hosts line ({reason})",
            hint=f"fix or delete that line (`ssh-keygen -R HOST -f {shlex.quote(str(path))}` removes a host's "
            "lines), or move the file away",
        ) from None


def bad_known_hosts_line(path: Path) -> str | None:
    """Return ``PATH:LINE`` for the first line of PATH that paramiko cannot parse, if one is found."""
    import paramiko

    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            paramiko.hostkeys.HostKeyEntry.from_line(line, number)
        except paramiko.SSHException:
            continue  # paramiko skips these lines itself
        except Exception:
            return f"{path}:{number}"
    return None


def file_holding(host: str) -> Path:
    """Return the known_hosts file that holds HOST's key (the system one takes precedence)."""
    import paramiko

    for path in (system_known_hosts_path(), known_hosts_path()):
        if path.is_file():
            with contextlib.suppress(Exception):
                if paramiko.HostKeys(str(path)).lookup(host):
                    return path
    return known_hosts_path()


def known_keys(host: str) -> dict[str, tuple]:
    """Return {key type: (key, file)} for HOST from ~/.ssh/known_hosts and edgepack's file."""
    import paramiko

    found: dict[str, tuple] = {}
    for path in (system_known_hosts_path(), known_hosts_path()):
        if not path.is_file():
            continue
        with reading_known_hosts(path):
            entries = paramiko.HostKeys(str(path)).lookup(host)
        for key_type, key in (entries or {}).items():
            found.setdefault(key_type, (key, path))
    return found
