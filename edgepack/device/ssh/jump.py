"""Connecting along a route: log in to each jump host, then reach the next host through it.

Each jump host is a full SSH login of its own, its host key checked against known_hosts under
the same rules as the device's (unknown: refused with its fingerprint; changed: refused). The
next host is reached over a ``direct-tcpip`` channel of the previous one, used as that
connection's socket, as ``ssh -J`` does; a ProxyCommand in front of the first host runs as a
subprocess (`paramiko.ProxyCommand`). Every failure says which host on the way failed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING

from edgepack.device.spec import Device
from edgepack.device.ssh.connect import Endpoint, connect_error, quiet_paramiko
from edgepack.device.ssh.known_hosts import (
    RefuseUnknownKey,
    changed_key_error,
    load_known_hosts,
)
from edgepack.device.ssh.route import Hop, Route
from edgepack.errors import DeviceError

if TYPE_CHECKING:
    import paramiko

KEEPALIVE_S = 15


def login(device: Device, ep: Endpoint, sock=None, via: str | None = None) -> paramiko.SSHClient:
    """Connect to EP (DEVICE itself, or the jump host VIA on the way to it), check its host key, and log in.

    Args:
        device: the device being reached (its name, timeout and key rules).
        ep: where to connect, after ~/.ssh/config.
        sock: a socket-like stream to EP (a channel of the previous jump host, a ProxyCommand);
            None connects over TCP.
        via: the jump host's label when EP is one.

    Raises:
        DeviceError: unreachable, unknown or changed host key, authentication refused.
    """
    import paramiko

    if ep.explicit_key and not os.path.isfile(ep.key_files[0]):
        raise DeviceError(
            f"key file {ep.key_files[0]} for device {device.name} not found",
            hint="check the path, or re-add the device with --key FILE",
        )
    quiet_paramiko()
    client = paramiko.SSHClient()
    load_known_hosts(client)
    client.set_missing_host_key_policy(RefuseUnknownKey(device, via))
    timeout = device.connect_timeout_s
    try:
        client.connect(
            ep.hostname,
            port=ep.port,
            username=ep.user,
            key_filename=ep.key_files or None,
            allow_agent=True,
            # The device keeps its rule (IdentityFile or --key: only those); a jump host given
            # the device's key as a fallback still tries the default keys, as ssh would.
            look_for_keys=not ep.key_files if via is None else not ep.explicit_key,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            sock=sock,
        )
    except DeviceError:
        client.close()
        raise
    except BaseException as exc:
        client.close()
        if isinstance(exc, paramiko.BadHostKeyException):
            raise changed_key_error(exc, ep, device.name, via) from None
        raise connect_error(exc, device, ep, via) from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(KEEPALIVE_S)
    return client


class Tunnel:
    """The logins to the jump hosts on the way to one device, made one after the other.

    Use it as a context manager, or call `close`; closing it drops every connection made through it.
    """

    def __init__(self, device: Device, route: Route):
        self.device = device
        self.route = route
        self.clients: list[paramiko.SSHClient] = []
        self._proxy = None  # the ProxyCommand in front of the first host, once started

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def last_jump(self) -> str | None:
        """The label of the jump host logged in last (the one the next connection goes through)."""
        return self.route.jumps[len(self.clients) - 1].label if self.clients else None

    def connect(self) -> paramiko.SSHClient:
        """Log in to every jump host, then to the device through them, and return the device's client.

        Raises:
            DeviceError: naming the host on the way that failed, and how.
        """
        for hop in self.route.jumps:
            self.login_hop(hop)
        target = self.route.target
        through = self.last_jump
        sock = self.open_to(target, f"device {self.device.name}")
        try:
            return self._login(target, sock, None)
        except DeviceError as err:
            if through is not None:
                err.message += f" (through jump host {through})"
                err.args = (err.message,)
            raise

    def login_hop(self, hop: Hop) -> None:
        """Log in to the jump host HOP through those already logged in (or straight, or by the ProxyCommand)."""
        sock = self.open_to(hop.endpoint, f"jump host {hop.label}")
        self.clients.append(self._login(hop.endpoint, sock, hop.label))

    def open_to(self, ep: Endpoint, what: str):
        """Open a stream to EP (WHAT names it in errors) for the next login, or None for plain TCP.

        Through the last jump host logged in when there is one; else through the route's
        ProxyCommand, when it has one.

        Raises:
            DeviceError: the jump host refused or failed to connect onward, or the ProxyCommand cannot start.
        """
        import paramiko

        timeout = self.device.connect_timeout_s
        if self.clients:
            via = self.last_jump
            transport = self.clients[-1].get_transport()
            try:
                if transport is None or not transport.is_active():
                    raise EOFError("the connection is closed")
                return transport.open_channel("direct-tcpip", (ep.hostname, ep.port), ("127.0.0.1", 0), timeout=timeout)
            except paramiko.ChannelException as exc:
                raise self._forward_error(exc, via, ep, what) from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if "timeout" in str(exc).lower():
                    raise DeviceError(
                        f"jump host {via} did not connect onward to {what} at {ep.hostname}:{ep.port} within {timeout:g} s",
                        hint=f"check that {ep.hostname}:{ep.port} is reachable from {via}",
                    ) from None
                raise DeviceError(
                    f"lost the connection to jump host {via} (on the way to {self.device.name}): {str(exc) or type(exc).__name__}",
                    hint=f"check that {via} is up, then run again",
                ) from None
        if self.route.proxy_command:
            try:
                if self._proxy is not None:  # trust fetches the first host's key, then logs in: a second start
                    _end_process(self._proxy.process)
                self._proxy = _proxy_command(self.route.proxy_command)
                return self._proxy
            except (OSError, ValueError) as exc:
                raise DeviceError(
                    f"cannot start the ProxyCommand on the way to {self.device.name}: {getattr(exc, 'strerror', None) or exc}",
                    hint="check ProxyCommand for this host in ~/.ssh/config",
                ) from None
        return None

    def close(self) -> None:
        """Drop every connection made through the tunnel (idempotent)."""
        clients, self.clients = self.clients, []
        for client in reversed(clients):
            with contextlib.suppress(Exception):
                client.close()
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            _end_process(proxy.process)

    # -- helpers ---------------------------------------------------------------------------

    def _login(self, ep: Endpoint, sock, via: str | None) -> paramiko.SSHClient:
        try:
            return login(self.device, ep, sock, via)
        except BaseException as exc:
            failed = _proxy_command_failure(sock, self.device)
            if sock is not None:
                with contextlib.suppress(Exception):
                    sock.close()
            if failed is not None and isinstance(exc, DeviceError):
                raise failed from None
            raise

    def _forward_error(self, exc, via: str, ep: Endpoint, what: str) -> DeviceError:
        where = f"{ep.hostname}:{ep.port}"
        reason = getattr(exc, "text", "") or str(exc)
        if getattr(exc, "code", None) == 1:  # SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
            return DeviceError(
                f"jump host {via} refused to forward to {what} at {where}: {reason}",
                hint=f"allow TCP forwarding for your user on {via} (`AllowTcpForwarding yes` in its sshd_config)",
            )
        return DeviceError(
            f"{what} is unreachable from jump host {via}: {where}: {reason}",
            hint=f"check that it is on, and that {where} is its address and SSH port as seen from {via} "
            "(HostName and Port in ~/.ssh/config, or the device's --host and --port)",
        )


def _proxy_command_failure(sock, device: Device) -> DeviceError | None:
    """Return the error for a ProxyCommand SOCK that has exited, with the last line it wrote; else None."""
    process = getattr(sock, "process", None)
    if process is None:
        return None
    with contextlib.suppress(Exception):
        process.wait(timeout=0.5)
    if process.poll() is None:
        return None
    time.sleep(0.1)  # the last lines reach the tail a moment after the exit
    said = b"".join(getattr(sock, "stderr_tail", []))
    lines = said.decode("utf-8", "replace").strip().splitlines()
    last = f": {lines[-1]}" if lines else ""
    return DeviceError(
        f"the ProxyCommand on the way to {device.name} exited with {process.returncode}{last}",
        hint="check ProxyCommand for this host in ~/.ssh/config (run it by hand to see what it says)",
    )


def _proxy_command(command: str):
    """Start COMMAND as a `paramiko.ProxyCommand` whose close may be called again once it has ended."""
    import paramiko

    class Proxy(paramiko.ProxyCommand):
        def __init__(self, command_line: str):
            super().__init__(command_line)
            # Its stderr is a pipe: drained here, or a chatty command (ssh -v) fills it and blocks.
            self.stderr_tail: collections.deque = collections.deque(maxlen=20)
            threading.Thread(target=self._drain, daemon=True, name="edgepack-proxycommand-stderr").start()

        def _drain(self) -> None:
            with contextlib.suppress(Exception):
                for line in iter(self.process.stderr.readline, b""):
                    self.stderr_tail.append(line)

        def close(self) -> None:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    super().close()

    return Proxy(command)


def _end_process(process) -> None:
    """Stop a ProxyCommand's process and release its pipes (paramiko only signals it)."""
    with contextlib.suppress(Exception):
        process.terminate()
    with contextlib.suppress(Exception):
        process.wait(timeout=2)
    with contextlib.suppress(Exception):
        process.kill()
    for pipe in (process.stdin, process.stdout, process.stderr):
        with contextlib.suppress(Exception):
            pipe.close()
