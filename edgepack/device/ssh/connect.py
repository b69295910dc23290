"""Reaching an SSH device: where to connect (after ~/.ssh/config), and failures as one DeviceError.

Shared by `edgepack.device.ssh.transport` and `edgepack.device.ssh.hostkeys` (fetching a
host's key to trust it), so both say the same thing about a host that cannot be reached.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

from edgepack.device.spec import Device
from edgepack.errors import DeviceError, debug_enabled


def quiet_paramiko() -> None:
    """Keep paramiko's own log lines (and the tracebacks it logs from its thread) off the terminal.

    Each failure it logs also reaches us as an exception, which becomes one DeviceError line.
    With EDGEPACK_DEBUG=1 its log goes to stderr as usual.
    """
    log = logging.getLogger("paramiko")
    if debug_enabled():
        log.propagate = True
        return
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
    log.propagate = False


@dataclass
class Endpoint:
    """Where and as whom to connect, after ~/.ssh/config is applied."""

    hostname: str
    port: int
    user: str
    key_files: list[str]
    explicit_key: bool
    proxy_jump: str | None = None  # ProxyJump from ~/.ssh/config, as written there
    proxy_command: str | None = None  # ProxyCommand from ~/.ssh/config, tokens expanded

    @property
    def known_hosts_name(self) -> str:
        """The host's name as written in known_hosts (``[host]:port`` unless the port is 22)."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def where(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def ssh_config_path() -> Path:
    """Return the user's OpenSSH client configuration file (``~/.ssh/config``)."""
    return Path(os.path.expanduser("~/.ssh/config"))


def ssh_config():
    """Return ~/.ssh/config parsed by paramiko (an empty one when there is no file).

    Raises:
        DeviceError: the file cannot be read or parsed.
    """
    import paramiko

    path = ssh_config_path()
    if not path.is_file():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except Exception as exc:  # paramiko raises several kinds for a malformed file
        raise DeviceError(f"{path}: cannot read it: {exc}", hint="fix the SSH config file") from None


def resolve_host(host: str, port: int | None = None, user: str | None = None, key: str | None = None) -> Endpoint:
    """Apply ~/.ssh/config to HOST (maybe an alias with HostName, Port, User, IdentityFile, ProxyJump).

    PORT, USER and KEY, where given, win over the config file.

    Raises:
        DeviceError: the config file is malformed or has a bad Port for HOST.
    """
    options = ssh_config().lookup(host)
    hostname = options.get("hostname", host)
    try:
        port = port or int(options.get("port", 22))
    except ValueError:
        raise DeviceError(f"{ssh_config_path()}: bad Port for host '{host}'") from None
    proxy_command = options.get("proxycommand")
    if proxy_command:
        _check_proxy_command_inputs(host, hostname, user, options)
    user = user or options.get("user") or getpass.getuser()
    if key:
        keys, explicit = [os.path.expanduser(key)], True
    else:
        keys = [os.path.expanduser(k) for k in options.get("identityfile", [])]
        keys, explicit = [k for k in keys if os.path.isfile(k)], False
    return Endpoint(
        hostname=hostname, port=port, user=user, key_files=keys, explicit_key=explicit,
        proxy_jump=options.get("proxyjump"), proxy_command=proxy_command,
    )


# What a host name or a user name can hold: nothing a shell would read as syntax. ProxyCommand's
# %h and %r are put into a command line as they are (as OpenSSH 9.6 does, anything else is refused).
_SAFE_HOST = re.compile(r"^[A-Za-z0-9._:%\[\]-]+$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9._-]+$")


def _check_proxy_command_inputs(host: str, hostname: str, user: str | None, options) -> None:
    """Refuse a host or user name that the ProxyCommand for HOST would put into a shell command as shell syntax."""
    for what, value, pattern in (("host", host, _SAFE_HOST), ("host name", hostname, _SAFE_HOST),
                                 ("user", user or options.get("user"), _SAFE_USER)):
        if value and not pattern.match(value):
            raise DeviceError(
                f"the {what} '{value}' cannot be put into the ProxyCommand of {ssh_config_path()}: "
                "it holds characters a shell would read",
                hint="use a plain host name or address (letters, digits, '.', '-', ':') and user name",
            )


def resolve(device: Device) -> Endpoint:
    """Apply ~/.ssh/config to DEVICE: the host may be an alias with HostName, Port, User, IdentityFile.

    Values written in the inventory win over the config file.
    """
    return resolve_host(device.host, device.port, device.user, device.key)


def connect_error(exc: BaseException, device: Device, ep: Endpoint, via: str | None = None) -> BaseException:
    """Return the DeviceError that explains why connecting to DEVICE at EP failed with EXC.

    VIA names the jump host EP is, when it is one on the way to DEVICE rather than DEVICE itself.
    A changed host key is `edgepack.device.ssh.known_hosts.changed_key_error`'s to explain; an
    exception this does not know is returned as it is.
    """
    import paramiko

    timeout = device.connect_timeout_s
    if via is None:
        name, role, there = device.name, f"device {device.name}", "the device"
        reach = f"check that {device.host} is on and reachable and that sshd listens on port {ep.port}"
        fix_auth = "re-add the device with --user/--key"
        owner = "the device's"
    else:
        name = f"jump host {via} (on the way to {device.name})"
        role = f"jump host {via} on the way to {device.name}"
        there = via
        reach = f"check that the jump host {via} is on and reachable and that sshd listens on port {ep.port}"
        fix_auth = f"set User and IdentityFile for {via} in ~/.ssh/config"
        owner = f"{via}'s"
    if isinstance(exc, paramiko.ProxyCommandFailure):  # its text holds the whole command, which may carry a token
        return DeviceError(f"the ProxyCommand on the way to {device.name} failed: {exc.error}",
                           hint="check ProxyCommand for this host in ~/.ssh/config (run it by hand to see what it says)")
    if isinstance(exc, paramiko.PasswordRequiredException):
        return DeviceError(
            f"the key file for {ep.where} is encrypted with a passphrase",
            hint=f"load it into ssh-agent with `ssh-add {shlex.quote(ep.key_files[0]) if ep.key_files else 'KEYFILE'}`",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        used = ", ".join(ep.key_files) if ep.key_files else "ssh-agent and the default keys in ~/.ssh"
        return DeviceError(
            f"authentication refused for {ep.user}@{ep.hostname}:{ep.port} ({role}); key tried: {used}",
            hint=f"add the public key to ~{ep.user}/.ssh/authorized_keys on {there} (ssh-copy-id), or {fix_auth}",
        )
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return DeviceError(f"cannot reach {name} at {ep.hostname}:{ep.port}: connection refused", hint=reach)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return DeviceError(
            f"cannot reach {name} at {ep.hostname}:{ep.port}: timed out after {timeout:g} s", hint=reach
        )
    if isinstance(exc, socket.gaierror):
        return DeviceError(
            f"cannot reach {name}: unknown host name '{ep.hostname}'",
            hint=unknown_name_hint(ep.hostname),
        )
    if isinstance(exc, ConnectionRefusedError):
        return DeviceError(f"cannot reach {name} at {ep.hostname}:{ep.port}: connection refused", hint=reach)
    if isinstance(exc, OSError):
        return DeviceError(f"cannot reach {name} at {ep.hostname}:{ep.port}: {exc.strerror or exc}", hint=reach)
    # paramiko says "banner" when the banner timeout fires first, "No existing session" when its
    # negotiation timeout (the same number of seconds) does: both mean no SSH answer in time.
    if isinstance(exc, paramiko.SSHException) and any(
        s in str(exc).lower() for s in ("banner", "no existing session")
    ):
        return DeviceError(
            f"no SSH answer from {name} at {ep.hostname}:{ep.port} within {timeout:g} s",
            hint=f"check that port {ep.port} is {owner} SSH port and that sshd is not overloaded",
        )
    if isinstance(exc, paramiko.SSHException):
        said = re.sub(r'ProxyCommand\(".*?"\)', "ProxyCommand", str(exc))  # never the command's text
        return DeviceError(f"SSH to {name} at {ep.hostname}:{ep.port} failed: {said}", hint=reach)
    return exc


def unknown_name_hint(host: str) -> str:
    """Return the hint for a host name that does not resolve: the closest ~/.ssh/config aliases, if any."""
    import difflib

    try:
        aliases = sorted(h for h in ssh_config().get_hostnames() if not any(c in h for c in "*?!"))
    except DeviceError:
        aliases = []
    close = difflib.get_close_matches(host, aliases, n=3, cutoff=0.6)
    if close:
        return f"did you mean {', '.join(close)} (from ~/.ssh/config)?"
    return "check the host name, or add it as an alias to ~/.ssh/config"
