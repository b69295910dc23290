"""SSH host keys: the known_hosts files, fingerprints, and `trust` for first contact with a host.

Host keys are checked against ``~/.ssh/known_hosts`` and edgepack's own
``<user config dir>/known_hosts``. An unknown key is refused, never added silently: the user
checks the fingerprint and runs ``edgepack devices trust NAME``. A changed key is always refused.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgepack.device.spec import Device, config_dir
from edgepack.device.ssh_connect import Endpoint, connect_error, quiet_paramiko, resolve
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
            with _reading_known_hosts(path):
                load(str(path))


class RefuseUnknownKey:
    """paramiko missing-host-key policy: refuse, naming the host and the key's fingerprint."""

    def __init__(self, device: Device):
        self.device = device

    def missing_host_key(self, client, hostname, key) -> None:
        raise DeviceError(
            f"unknown host key for {hostname} (device {self.device.name}): "
            f"{key.get_name()} {fingerprint(key)}; refusing to connect",
            hint=f"check the fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then run "
            f"`edgepack devices trust {self.device.name}`",
        )


def changed_key_error(exc: paramiko.BadHostKeyException, ep: Endpoint, name: str) -> DeviceError:
    """Return the DeviceError for device NAME at EP offering another key than the known one (EXC)."""
    where = _file_holding(ep.known_hosts_name)
    return DeviceError(
        f"the host key of {ep.known_hosts_name} (device {name}) has CHANGED: it now offers "
        f"{exc.key.get_name()} {fingerprint(exc.key)}, known as {fingerprint(exc.expected_key)}. "
        "This may be an attack (someone in the middle); refusing to connect",
        hint=f"if the device was reinstalled and you trust the new key, remove the old one with "
        f"`ssh-keygen -R {shlex.quote(ep.known_hosts_name)} -f {shlex.quote(str(where))}`, "
        f"then run `edgepack devices trust {name}`",
    )


@contextlib.contextmanager
def _reading_known_hosts(path: Path):
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
            f"{_bad_known_hosts_line(path) or path}: malformed known_hosts line ({reason})",
            hint=f"fix or delete that line (`ssh-keygen -R HOST -f {shlex.quote(str(path))}` removes a host's "
            "lines), or move the file away",
        ) from None


def _bad_known_hosts_line(path: Path) -> str | None:
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


def _file_holding(host: str) -> Path:
    """Return the known_hosts file that holds HOST's key (the system one takes precedence)."""
    import paramiko

    for path in (system_known_hosts_path(), known_hosts_path()):
        if path.is_file():
            with contextlib.suppress(Exception):
                if paramiko.HostKeys(str(path)).lookup(host):
                    return path
    return known_hosts_path()


def _known_keys(host: str) -> dict[str, tuple]:
    """Return {key type: (key, file)} for HOST from ~/.ssh/known_hosts and edgepack's file."""
    import paramiko

    found: dict[str, tuple] = {}
    for path in (system_known_hosts_path(), known_hosts_path()):
        if not path.is_file():
            continue
        with _reading_known_hosts(path):
            entries = paramiko.HostKeys(str(path)).lookup(host)
        for key_type, key in (entries or {}).items():
            found.setdefault(key_type, (key, path))
    return found


# -- trust --------------------------------------------------------------------------------


@dataclass
class HostKey:
    """A host's key as fetched from the server, and how it compares with what is known."""

    device: str
    host: str  # as written in known_hosts: host or [host]:port
    key_type: str
    fingerprint: str
    status: str  # "new", "known" (already trusted), "changed" (differs from the known key)
    known_in: Path | None
    line: str  # the known_hosts line for it


def fetch_host_key(device: Device) -> HostKey:
    """Connect to DEVICE without authenticating and return its host key, compared with known_hosts.

    Raises:
        DeviceError: the host cannot be reached or does not speak SSH.
    """
    import paramiko

    quiet_paramiko()
    ep = resolve(device)
    known = _known_keys(ep.known_hosts_name)
    timeout = device.connect_timeout_s
    sock = None
    t = None
    try:
        sock = socket.create_connection((ep.hostname, ep.port), timeout=timeout)
        t = paramiko.Transport(sock)
        t.banner_timeout = timeout
        if known:  # ask for the key type we already know, so a comparison is meaningful
            opts = t.get_security_options()
            first = next(iter(known))
            first = "rsa-sha2-512" if first == "ssh-rsa" and "rsa-sha2-512" in opts.key_types else first
            opts.key_types = [first] + [k for k in opts.key_types if k != first]
        t.start_client(timeout=timeout)
        key = t.get_remote_server_key()
    except BaseException as exc:
        error = connect_error(exc, device, ep)
        if error is exc:
            raise
        raise error from None
    finally:
        if t is not None:
            t.close()
        if sock is not None:
            sock.close()
    status, known_in = "new", None
    for key_type, (known_key, path) in known.items():
        if key_type == key.get_name():
            status, known_in = ("known" if known_key == key else "changed"), path
    if status == "new" and known:
        # The host is known by another key type only; OpenSSH would call that a change as well.
        status, known_in = "changed", next(iter(known.values()))[1]
    line = f"{ep.known_hosts_name} {key.get_name()} {key.get_base64()}"
    return HostKey(device.name, ep.known_hosts_name, key.get_name(), fingerprint(key), status, known_in, line)


def trust(device: Device, yes: bool = False, confirm: Callable[[HostKey], bool] | None = None) -> HostKey:
    """Fetch DEVICE's host key and, once confirmed, add it to edgepack's known_hosts file.

    Args:
        device: the device whose host to trust.
        yes: trust without asking.
        confirm: asked with the fetched key when ``yes`` is false; returning False aborts.

    Returns:
        The key; its status is "known" when it was already trusted (nothing written).

    Raises:
        DeviceError: unreachable, the host already has a different key, or not confirmed.
    """
    hk = fetch_host_key(device)
    if hk.status == "known":
        return hk
    if hk.status == "changed":
        raise DeviceError(
            f"{hk.host} (device {device.name}) already has a different key in {hk.known_in}; "
            f"it now offers {hk.key_type} {hk.fingerprint}. This may be an attack; not trusting it",
            hint=f"if the device was reinstalled, remove the old key with "
            f"`ssh-keygen -R {shlex.quote(hk.host)} -f {shlex.quote(str(hk.known_in))}` and run trust again",
        )
    if not yes:
        if confirm is None:
            raise DeviceError(
                f"not trusting {hk.host} without confirmation ({hk.key_type} {hk.fingerprint})",
                hint=f"run `edgepack devices trust {device.name} --yes` once you have checked the fingerprint",
            )
        if not confirm(hk):
            raise DeviceError(f"did not trust {hk.host}: not confirmed")
    path = known_hosts_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    needs_newline = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="ascii") as fh:
        fh.write(("\n" if needs_newline else "") + hk.line + "\n")
    hk.known_in = path
    return hk
