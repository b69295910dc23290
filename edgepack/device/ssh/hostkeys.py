"""SSH host keys: fetching a host's key and `trust` for first contact, for the device and each jump host.

Host keys are checked against ``~/.ssh/known_hosts`` and edgepack's own
``<user config dir>/known_hosts`` (`edgepack.device.ssh.known_hosts`). An unknown key is refused,
never added silently: the user checks the fingerprint and runs ``edgepack devices trust NAME``,
which asks about each host on the way in turn. A changed key is always refused.
"""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgepack.device.spec import Device
from edgepack.device.ssh.connect import Endpoint, connect_error, quiet_paramiko
from edgepack.device.ssh.jump import Tunnel
from edgepack.device.ssh.known_hosts import (
    fingerprint,
    known_hosts_path,
    known_keys,
)
from edgepack.device.ssh.route import resolve_route
from edgepack.errors import DeviceError

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
    via: str | None = None  # the jump host's label when this is one on the way to the device

    @property
    def role(self) -> str:
        """``device NAME`` or ``jump host LABEL``."""
        return f"device {self.device}" if self.via is None else f"jump host {self.via}"


def trust_route(device: Device, yes: bool = False, confirm: Callable[[HostKey], bool] | None = None) -> list[HostKey]:
    """Trust the host key of each jump host on the way to DEVICE, then DEVICE's, in that order.

    Each key is fetched through the hosts before it (logged in with their now trusted keys) and,
    once confirmed, added to edgepack's known_hosts file.

    Args:
        device: the device whose hosts to trust.
        yes: trust without asking.
        confirm: asked with each fetched key that is new when ``yes`` is false; returning False aborts.

    Returns:
        The keys, jump hosts first; a key's status is "known" when it was already trusted (nothing written).

    Raises:
        DeviceError: unreachable, a host already has a different key, or not confirmed.
    """
    route = resolve_route(device)
    keys = []
    with Tunnel(device, route) as tunnel:
        for hop in route.jumps:
            hk = _fetch(device, hop.endpoint, tunnel.open_to(hop.endpoint, f"jump host {hop.label}"), hop.label)
            keys.append(_accept(hk, device, yes, confirm))
            tunnel.login_hop(hop)
        hk = _fetch(device, route.target, tunnel.open_to(route.target, f"device {device.name}"), None)
        keys.append(_accept(hk, device, yes, confirm))
    return keys


def trust(device: Device, yes: bool = False, confirm: Callable[[HostKey], bool] | None = None) -> HostKey:
    """Trust DEVICE's host key (and those of the jump hosts on the way, first); return the device's.

    See `trust_route`.
    """
    return trust_route(device, yes, confirm)[-1]


def _fetch(device: Device, ep: Endpoint, sock, via: str | None) -> HostKey:
    """Fetch the host key EP offers over SOCK (None: a TCP connection), without logging in."""
    import paramiko

    quiet_paramiko()
    known = known_keys(ep.known_hosts_name)
    timeout = device.connect_timeout_s
    t = None
    try:
        if sock is None:
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
        error = connect_error(exc, device, ep, via)
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
    return HostKey(device.name, ep.known_hosts_name, key.get_name(), fingerprint(key), status, known_in, line, via)


def _accept(hk: HostKey, device: Device, yes: bool, confirm: Callable[[HostKey], bool] | None) -> HostKey:
    """Add HK to edgepack's known_hosts once confirmed; refuse a changed key."""
    if hk.status == "known":
        return hk
    if hk.status == "changed":
        raise DeviceError(
            f"{hk.host} ({hk.role}) already has a different key in {hk.known_in}; "
            f"it now offers {hk.key_type} {hk.fingerprint}. This may be an attack; not trusting it",
            hint=f"if the host was reinstalled, remove the old key with "
            f"`ssh-keygen -R {shlex.quote(hk.host)} -f {shlex.quote(str(hk.known_in))}` and run trust again",
        )
    if not yes:
        if confirm is None:
            raise DeviceError(
                f"not trusting {hk.host} ({hk.role}) without confirmation ({hk.key_type} {hk.fingerprint})",
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
