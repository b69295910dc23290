"""The way to a device: the jump hosts in front of it (``--jump``, ProxyJump) or its ProxyCommand.

A device's route comes from its inventory entry (``jump:``) when set, else from ~/.ssh/config:
the device's ``ProxyJump`` (a chain, ``gw1,gw2``) or ``ProxyCommand``. Each jump host is looked up
in ~/.ssh/config for its own HostName, Port, User and IdentityFile; the first one may have a
ProxyJump or ProxyCommand of its own, which comes first, as with OpenSSH. `edgepack.device.ssh.jump`
connects along the route.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import socket
from dataclasses import dataclass, field

from edgepack.device.spec import Device, JumpHost, parse_jumps
from edgepack.device.ssh.connect import (
    Endpoint,
    resolve,
    resolve_host,
    ssh_config,
    ssh_config_path,
)
from edgepack.errors import DeviceError

MAX_JUMPS = 8  # more than any lab has; a longer chain is a loop in ~/.ssh/config


@dataclass
class Hop:
    """One jump host on the way to a device."""

    label: str  # as written in --jump or ProxyJump: an alias or [user@]host[:port]
    endpoint: Endpoint


@dataclass
class Route:
    """How to reach a device: the jump hosts in connection order, and a ProxyCommand for the first host, if any."""

    target: Endpoint
    jumps: list[Hop] = field(default_factory=list)
    proxy_command: str | None = None  # runs to reach the first jump host, or the device when there is none

    @property
    def direct(self) -> bool:
        """True when edgepack connects straight to the device."""
        return not self.jumps and not self.proxy_command

    def describe(self) -> str:
        """Return a short account of the way, e.g. ``via gw (pi@10.0.0.1:22)`` or ``direct``."""
        if self.direct:
            return "direct"
        parts = [f"{h.label} ({h.endpoint.where})" for h in self.jumps]
        if self.proxy_command:
            parts.insert(0, "ProxyCommand")
        return "via " + ", then ".join(parts)


def resolve_route(device: Device) -> Route:
    """Return the way to DEVICE after its ``jump`` setting and ~/.ssh/config.

    Raises:
        DeviceError: a malformed ProxyJump in ~/.ssh/config, a loop of ProxyJumps, or too many jump hosts.
    """
    target = resolve(device)
    if device.jump == "none":
        return Route(target)
    if device.jump:
        jumps, proxy = _expand(parse_jumps(device.jump), device, {device.host})
        return Route(target, jumps, proxy)
    if _proxy_jump(target):
        jumps, proxy = _expand(_config_jumps(device.host, target.proxy_jump), device, {device.host})
        return Route(target, jumps, proxy)
    return Route(target, [], target.proxy_command or None)


def check_route(device: Device) -> Route:
    """Resolve DEVICE's route and check that each jump host named is known, before anything is stored.

    A jump host must be a Host in ~/.ssh/config, an address, a domain name (with a dot: not
    looked up here, the lab's DNS may be elsewhere), or a short name that resolves here; a
    mistyped alias answers with the closest aliases.

    Raises:
        DeviceError: as `resolve_route`, or a jump host name that is unknown.
    """
    route = resolve_route(device)
    aliases = _aliases()
    for hop in route.jumps:
        name = hop.endpoint.hostname
        if name in aliases or _is_address(name) or "." in name or _resolves(name):
            continue
        close = difflib.get_close_matches(name, sorted(aliases), n=3, cutoff=0.6)
        raise DeviceError(
            f"unknown jump host '{name}' for device {device.name}: not a Host in {ssh_config_path()} "
            "and not a host name known here",
            hint=f"did you mean {', '.join(close)}?" if close else
            f"add it to {ssh_config_path()} (Host {name} / HostName ADDRESS / User ...), or give its address: --jump USER@ADDRESS[:PORT]",
        )
    return route


def _expand(specs: list[JumpHost], device: Device, seen: set[str]) -> tuple[list[Hop], str | None]:
    """Turn SPECS into hops, the first one's own ProxyJump (recursively) or ProxyCommand in front."""
    first = specs[0]
    if first.host in seen:
        raise DeviceError(
            f"ProxyJump loop on the way to {device.name}: {first.host} is reached through itself",
            hint=f"fix the ProxyJump lines in {ssh_config_path()}",
        )
    hops = [_hop(spec, device) for spec in specs]
    before: list[Hop] = []
    proxy = None
    head = hops[0].endpoint
    if _proxy_jump(head):
        before, proxy = _expand(_config_jumps(first.host, head.proxy_jump), device, seen | {first.host})
    elif head.proxy_command:
        proxy = head.proxy_command
    jumps = before + hops
    if len(jumps) > MAX_JUMPS:
        raise DeviceError(
            f"more than {MAX_JUMPS} jump hosts on the way to {device.name}",
            hint=f"check the ProxyJump lines in {ssh_config_path()} for a loop",
        )
    return jumps, proxy


def _hop(spec: JumpHost, device: Device) -> Hop:
    ep = resolve_host(spec.host, spec.port, spec.user)
    if not ep.key_files and device.key:
        # A jump host without an IdentityFile of its own is offered the device's key as well
        # (after ssh-agent and the default keys): labs often use one key for the gateway and the boards.
        ep.key_files = [os.path.expanduser(device.key)]
    return Hop(spec.text, ep)


def _proxy_jump(ep: Endpoint) -> bool:
    return bool(ep.proxy_jump) and ep.proxy_jump.strip().lower() != "none"


def _config_jumps(host: str, value: str) -> list[JumpHost]:
    try:
        return parse_jumps(value)
    except ValueError as exc:
        raise DeviceError(f"{ssh_config_path()}: ProxyJump for host '{host}': {exc}", hint="fix the SSH config file") from None


def _aliases() -> set[str]:
    return {h for h in ssh_config().get_hostnames() if not any(c in h for c in "*?!")}


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _resolves(name: str) -> bool:
    try:
        socket.getaddrinfo(name, None)
        return True
    except (socket.gaierror, UnicodeError, OSError):
        return False
