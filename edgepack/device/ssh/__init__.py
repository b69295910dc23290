"""Devices over SSH, on paramiko: the transport, the way to a device, and its host keys.

The rest of edgepack uses these names, from here only:

- `SshTransport`: push files (SFTP, or exec channels where a device has no SFTP) and run commands;
- `resolve_route` / `check_route` and `Route`: the way to a device (``--jump``, ProxyJump,
  ProxyCommand), checked before a device is stored;
- `HostKey`, `trust`, `trust_route`, `known_hosts_path`: host keys, trusted on
  first contact only when the user says so.

Inside: `transport` (the session), `connect` (~/.ssh/config, endpoints, connection errors),
`route` and `jump` (jump hosts over direct-tcpip channels, ProxyCommand), `known_hosts` and
`hostkeys`, `exec_push` (files without SFTP). The jump-host syntax (``[user@]host[:port]``,
`edgepack.device.spec.parse_jumps`) stays with `Device`, which validates its ``jump`` field with it.
"""

from __future__ import annotations

from edgepack.device.ssh.hostkeys import HostKey, trust, trust_route
from edgepack.device.ssh.known_hosts import known_hosts_path
from edgepack.device.ssh.route import Route, check_route, resolve_route
from edgepack.device.ssh.transport import SshTransport

__all__ = [
    "HostKey",
    "Route",
    "SshTransport",
    "check_route",
    "known_hosts_path",
    "resolve_route",
    "trust",
    "trust_route",
]
