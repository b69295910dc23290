"""Devices over SSH: `SshTransport`, on paramiko, with SFTP for files (an exec channel where there is none).

The device may sit behind jump hosts or a ProxyCommand (`edgepack.device.ssh.route`,
`edgepack.device.ssh.jump`). Every host key on the way is checked against the known_hosts files
(`edgepack.device.ssh.known_hosts`): an unknown key is refused, never added silently, and a changed
key is always refused. A device without an SFTP subsystem gets its files over exec channels
(`edgepack.device.ssh.exec_push`), with the same guarantees.

Remote commands are built with shlex only; the device's workdir and the command's arguments
reach the remote ``sh`` as positional parameters, never pasted into a script.
"""

from __future__ import annotations

import contextlib
import posixpath
import shlex
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.bundle import sha256_file
from edgepack.device.cancel import check_stop
from edgepack.device.spec import Device
from edgepack.device.ssh.connect import Endpoint
from edgepack.device.ssh.exec_push import ExecFiles
from edgepack.device.ssh.jump import Tunnel
from edgepack.device.ssh.route import Route, resolve_route
from edgepack.device.transport import CommandResult, Transport, output_text, part_path
from edgepack.errors import DeviceError

if TYPE_CHECKING:
    import paramiko

# `sh -c SCRIPT edgepack WORKDIR ARGV...`: report the pid (the session leader, so also the
# process group to kill on a timeout), cd into the workdir, exec the command.
_RUNNER = 'echo "edgepack-pid $$" >&2; cd -- "$1" || exit 125; shift; exec "$@"'
_PID_MARK = "edgepack-pid "
# SFTP gives up when a read or write makes no progress for this many connect timeouts: a dead
# link would otherwise hang `put` forever, and a slow but live one keeps making progress.
SFTP_STALL_FACTOR = 3


class SftpRefused(DeviceError):
    """The device refused to start SFTP (no SFTP subsystem): it gets its files over exec channels."""


class SshTransport(Transport):
    """A device reached over SSH (paramiko), maybe through jump hosts, with SFTP or an exec channel for files."""

    def __init__(self, device: Device):
        self.device = device
        self.name = device.name
        self.python = device.python
        self.workdir = device.workdir
        self.endpoint: Endpoint | None = None
        self.route: Route | None = None
        self.push_method = "sftp"  # "exec" once connected to a device without SFTP
        self._client: paramiko.SSHClient | None = None
        self._tunnel: Tunnel | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._exec: ExecFiles | None = None

    # -- connection ------------------------------------------------------------------------

    def connect(self) -> SshTransport:
        """Connect (through the jump hosts on the way), verify every host key, authenticate, and create the workdir.

        Raises:
            DeviceError: unreachable, unknown or changed host key, authentication refused; for a
                jump host, naming it.
        """
        if self._client is not None:
            return self
        route = self.route = resolve_route(self.device)
        self.endpoint = route.target
        tunnel = Tunnel(self.device, route)
        try:
            self._client = tunnel.connect()
        except BaseException:
            tunnel.close()
            raise
        self._tunnel = tunnel
        self.push_method = "sftp" if self._has_sftp() else "exec"
        self.workdir = self._resolve_workdir(self.device.workdir)
        self._makedirs(self.workdir)
        return self

    def close(self) -> None:
        sftp, client, tunnel = self._sftp, self._client, self._tunnel
        self._sftp = self._client = self._tunnel = self._exec = None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if tunnel is not None:
            tunnel.close()

    @property
    def way(self) -> str:
        return self.route.describe() if self.route is not None else "direct"

    def ssh_client(self) -> paramiko.SSHClient:
        """Return the device's SSH client, connecting first if needed."""
        return self._connected()

    def _connected(self) -> paramiko.SSHClient:
        if self._client is None:
            self.connect()
        assert self._client is not None  # connect() sets it or raises
        return self._client

    def sftp(self) -> paramiko.SFTPClient:
        """Return the SFTP session, opening it on first use."""
        import paramiko

        if self._sftp is None:
            try:
                sftp = self._connected().open_sftp()
            except (paramiko.SSHException, OSError) as exc:
                if isinstance(exc, socket.timeout) or "timeout" in str(exc).lower():
                    raise DeviceError(
                        f"SFTP on {self.name} did not open within {self.device.connect_timeout_s:g} s",
                        hint="check the network link to the device and that its sshd is not overloaded",
                    ) from None
                raise SftpRefused(
                    f"cannot open SFTP on {self.name}: {exc}",
                    hint="enable it in the device's sshd_config: `Subsystem sftp internal-sftp`",
                ) from None
            sftp.get_channel().settimeout(self.sftp_stall_s)
            self._sftp = sftp
        return self._sftp

    def _has_sftp(self) -> bool:
        """Open SFTP and say whether the device has it; a device that refuses the subsystem gets exec pushes.

        Raises:
            DeviceError: the connection itself failed.
        """
        try:
            self.sftp()
            return True
        except SftpRefused:
            transport = self._connected().get_transport()
            if transport is None or not transport.is_active():
                raise  # the connection died, the device did not refuse SFTP
            return False

    def _files(self) -> ExecFiles:
        if self._exec is None:
            self._exec = ExecFiles(self)
        return self._exec

    @property
    def sftp_stall_s(self) -> float:
        """Seconds an SFTP read or write may make no progress before it fails (never forever)."""
        return self.device.connect_timeout_s * SFTP_STALL_FACTOR

    def _stalled(self, doing: str) -> DeviceError:
        """Drop the SFTP session that stopped answering (a later call opens a fresh one) and say so."""
        sftp, self._sftp = self._sftp, None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()
        return DeviceError(
            f"SFTP to {self.name} stalled: no progress for {self.sftp_stall_s:g} s while {doing}",
            hint="check the network link to the device (is it still up?), then run again; "
            "a slow link is fine, a silent one is not",
        )

    def _resolve_workdir(self, workdir: str) -> str:
        if workdir.startswith("~/"):
            workdir = workdir[2:]
        if posixpath.isabs(workdir):
            return posixpath.normpath(workdir)
        if self.push_method == "exec":
            return posixpath.normpath(posixpath.join(self._files().home(), workdir))
        try:
            home = self.sftp().normalize(".")
        except socket.timeout:
            raise self._stalled("finding the login home") from None
        except OSError as exc:
            raise DeviceError(f"SFTP failed on {self.name}: cannot find the login home: {exc}") from None
        return posixpath.normpath(posixpath.join(home, workdir))

    # -- commands --------------------------------------------------------------------------

    def run(self, argv: list[str], timeout: float, hold_stdin: bool = False) -> CommandResult:
        import paramiko

        if not argv:
            raise DeviceError("no command to run")
        command = shlex.join(["sh", "-c", _RUNNER, "edgepack", self.workdir, *argv])
        start = time.perf_counter()
        cannot_run = f"cannot run a command on {self.name}"
        try:
            chan = self._connected().get_transport().open_session(timeout=self.device.connect_timeout_s)
        except (paramiko.SSHException, OSError, AttributeError) as exc:
            raise DeviceError(f"{cannot_run}: {exc}", hint="check the connection") from None
        out, err = bytearray(), bytearray()
        deadline = start + timeout
        pause = 0.001
        try:
            try:
                chan.exec_command(command)
                if not hold_stdin:
                    chan.shutdown_write()  # stdin at EOF: nothing on the device waits for input
            except (paramiko.SSHException, OSError) as exc:
                raise DeviceError(f"{cannot_run}: {exc}", hint="check the connection") from None
            while True:
                got = False
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                    got = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                    got = True
                drained = not chan.recv_ready() and not chan.recv_stderr_ready()
                if drained and (chan.closed or (chan.exit_status_ready() and chan.eof_received)):
                    break
                if time.perf_counter() > deadline:
                    raise self._timed_out(argv, timeout)
                check_stop(self.name)
                if got:
                    pause = 0.001
                else:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.02)
            code = chan.recv_exit_status()
        except BaseException:
            # A timeout, Ctrl-C, a stop request, a lost connection: never leave the command running.
            self._kill(chan, err)
            raise
        finally:
            chan.close()
        stderr = output_text(bytes(err))
        if stderr.startswith(_PID_MARK):
            stderr = stderr.split("\n", 1)[1] if "\n" in stderr else ""
        if code == 127 and argv[0] == self.python:
            raise self._missing_python(argv)
        return CommandResult(code, output_text(bytes(out)), stderr, time.perf_counter() - start)

    def _kill(self, chan: paramiko.Channel, err: bytearray) -> None:
        """Kill the command's process group on the device (the pid its runner printed first on stderr).

        Waits at most the connect timeout for the pid line, and as long again for the kill itself
        (a loaded device is slow to start the kill); a connection that is gone leaves nothing to do.
        """
        deadline = time.monotonic() + self.device.connect_timeout_s
        with contextlib.suppress(Exception):
            while b"\n" not in err and not chan.closed and time.monotonic() < deadline:
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                else:
                    time.sleep(0.005)
        first = bytes(err).split(b"\n", 1)[0].decode("ascii", "replace")
        if not first.startswith(_PID_MARK) or not first[len(_PID_MARK) :].strip().isdigit():
            return
        pid = first[len(_PID_MARK) :].strip()
        kill = f"kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null; true"
        deadline = time.monotonic() + self.device.connect_timeout_s
        with contextlib.suppress(Exception):
            killer = self._connected().get_transport().open_session(timeout=self.device.connect_timeout_s)
            try:
                killer.exec_command(kill)
                while not killer.exit_status_ready() and time.monotonic() < deadline:
                    time.sleep(0.005)
            finally:
                killer.close()

    # -- files -----------------------------------------------------------------------------

    def _prepare(self, remote_dir: str, names: list[str]) -> dict[str, str | None]:
        if self.push_method == "exec":
            return self._files().prepare(remote_dir, names)
        return super()._prepare(remote_dir, names)

    def _makedirs(self, remote_dir: str) -> None:
        if self.push_method == "exec":
            return self._files().makedirs(remote_dir)
        sftp = self.sftp()
        path = ""
        for part in remote_dir.split("/"):
            path = posixpath.join(path, part) if path else (part or "/")
            if path == "/" or not part:
                continue
            try:
                if not stat.S_ISDIR(sftp.stat(path).st_mode):
                    raise DeviceError(f"cannot create {remote_dir} on {self.name}: {path} is not a directory")
                continue
            except FileNotFoundError:
                pass
            except socket.timeout:
                raise self._stalled(f"looking at {path}") from None
            except OSError as exc:
                raise DeviceError(f"SFTP failed on {self.name}: cannot stat {path}: {exc}") from None
            try:
                sftp.mkdir(path)
            except socket.timeout:
                raise self._stalled(f"creating {path}") from None
            except OSError as exc:
                with contextlib.suppress(OSError):  # created meanwhile by someone else
                    if stat.S_ISDIR(sftp.stat(path).st_mode):
                        continue
                raise DeviceError(
                    f"SFTP failed on {self.name}: cannot create {path}: {exc}",
                    hint="check the device's workdir and its permissions (edgepack devices add --workdir DIR)",
                ) from None

    def _upload_all(self, files: list[tuple[Path, str, str]]) -> None:
        if self.push_method == "exec":
            return self._files().upload_all(files)
        return super()._upload_all(files)

    def _upload(self, local: Path, remote: str) -> None:
        if self.push_method == "exec":
            return self._files().upload_all([(local, remote, sha256_file(local))])
        sftp = self.sftp()
        tmp = part_path(remote)
        try:
            sftp.put(str(local), tmp, confirm=True)
            sftp.chmod(tmp, local.stat().st_mode & 0o777)
            try:
                sftp.posix_rename(tmp, remote)
            except OSError:  # no posix-rename extension: plain rename refuses to overwrite
                with contextlib.suppress(OSError):
                    sftp.remove(remote)
                sftp.rename(tmp, remote)
        except BaseException as exc:  # Ctrl-C or a stop request too: leave no part file behind
            if isinstance(exc, socket.timeout):  # the part file stays (it cannot be removed over a dead link): the next push sweeps it
                raise self._stalled(f"writing {remote}") from None
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            if isinstance(exc, DeviceError) or not isinstance(exc, Exception):
                raise
            raise DeviceError(
                f"SFTP failed on {self.name}: cannot write {remote}: {exc}",
                hint="check free space and permissions in the device's workdir",
            ) from None
