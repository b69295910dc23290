"""Devices over SSH: `SshTransport` on paramiko, and `trust` for first contact with a host.

Host keys are checked against ``~/.ssh/known_hosts`` and edgepack's own
``<user config dir>/known_hosts``. An unknown key is refused, never added silently: the user
checks the fingerprint and runs ``edgepack devices trust NAME``. A changed key is always refused.

Remote commands are built with shlex only; the device's workdir and the command's arguments
reach the remote ``sh`` as positional parameters, never pasted into a script.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import posixpath
import secrets
import shlex
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgepack.device.inventory import Device, config_dir
from edgepack.device.transport import (
    HASH_SNIPPET,
    PART_SUFFIX,
    CommandResult,
    Transport,
    _json_answer,
    _short,
    _text,
    check_stop,
)
from edgepack.errors import DeviceError, debug_enabled

if TYPE_CHECKING:
    import paramiko

# `sh -c SCRIPT edgepack WORKDIR ARGV...`: report the pid (the session leader, so also the
# process group to kill on a timeout), cd into the workdir, exec the command.
_RUNNER = 'echo "edgepack-pid $$" >&2; cd -- "$1" || exit 125; shift; exec "$@"'
_PID_MARK = "edgepack-pid "
# SFTP gives up when a read or write makes no progress for this many connect timeouts: a dead
# link would otherwise hang `put` forever, and a slow but live one keeps making progress.
SFTP_STALL_FACTOR = 3


def _quiet_paramiko() -> None:
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


@dataclass
class Endpoint:
    """Where and as whom to connect, after ~/.ssh/config is applied."""

    hostname: str
    port: int
    user: str
    key_files: list[str]
    explicit_key: bool

    @property
    def known_hosts_name(self) -> str:
        """The host's name as written in known_hosts (``[host]:port`` unless the port is 22)."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def where(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def resolve(device: Device) -> Endpoint:
    """Apply ~/.ssh/config to DEVICE: the host may be an alias with HostName, Port, User, IdentityFile.

    Values written in the inventory win over the config file.
    """
    import paramiko

    options: dict = {}
    config_path = Path(os.path.expanduser("~/.ssh/config"))
    if config_path.is_file():
        try:
            options = paramiko.SSHConfig.from_path(str(config_path)).lookup(device.host)
        except Exception as exc:  # paramiko raises several kinds for a malformed file
            raise DeviceError(f"{config_path}: cannot read it: {exc}", hint="fix the SSH config file") from None
    hostname = options.get("hostname", device.host)
    try:
        port = device.port or int(options.get("port", 22))
    except ValueError:
        raise DeviceError(f"{config_path}: bad Port for host '{device.host}'") from None
    user = device.user or options.get("user") or getpass.getuser()
    if device.key:
        keys, explicit = [os.path.expanduser(device.key)], True
    else:
        keys = [os.path.expanduser(k) for k in options.get("identityfile", [])]
        keys, explicit = [k for k in keys if os.path.isfile(k)], False
    return Endpoint(hostname=hostname, port=port, user=user, key_files=keys, explicit_key=explicit)


class _RefuseUnknownKey:
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


class SshTransport(Transport):
    """A device reached over SSH (paramiko), with SFTP for files."""

    def __init__(self, device: Device):
        self.device = device
        self.name = device.name
        self.python = device.python
        self.workdir = device.workdir
        self.endpoint: Endpoint | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection ------------------------------------------------------------------------

    def connect(self) -> SshTransport:
        """Connect, verify the host key, authenticate, and create the workdir.

        Raises:
            DeviceError: unreachable, unknown or changed host key, authentication refused.
        """
        import paramiko

        if self._client is not None:
            return self
        device = self.device
        ep = self.endpoint = resolve(device)
        if ep.explicit_key and not os.path.isfile(ep.key_files[0]):
            raise DeviceError(
                f"key file {ep.key_files[0]} for device {device.name} not found",
                hint="check the path, or re-add the device with --key FILE",
            )
        _quiet_paramiko()
        client = paramiko.SSHClient()
        for path, load in ((system_known_hosts_path(), client.load_system_host_keys), (known_hosts_path(), client.load_host_keys)):
            if path.is_file():
                with _reading_known_hosts(path):
                    load(str(path))
        client.set_missing_host_key_policy(_RefuseUnknownKey(device))
        timeout = device.connect_timeout_s
        try:
            client.connect(
                ep.hostname,
                port=ep.port,
                username=ep.user,
                key_filename=ep.key_files or None,
                allow_agent=True,
                look_for_keys=not ep.key_files,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
            )
        except DeviceError:
            client.close()
            raise
        except BaseException as exc:
            client.close()
            raise self._connect_error(exc, ep) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        self._client = client
        self.workdir = self._resolve_workdir(device.workdir)
        self._makedirs(self.workdir)
        return self

    def _connect_error(self, exc: BaseException, ep: Endpoint) -> BaseException:
        import paramiko

        name, timeout = self.device.name, self.device.connect_timeout_s
        reach = f"check that {self.device.host} is on and reachable and that sshd listens on port {ep.port}"
        if isinstance(exc, paramiko.BadHostKeyException):
            where = self._file_holding(ep.known_hosts_name)
            return DeviceError(
                f"the host key of {ep.known_hosts_name} (device {name}) has CHANGED: it now offers "
                f"{exc.key.get_name()} {fingerprint(exc.key)}, known as {fingerprint(exc.expected_key)}. "
                "This may be an attack (someone in the middle); refusing to connect",
                hint=f"if the device was reinstalled and you trust the new key, remove the old one with "
                f"`ssh-keygen -R {shlex.quote(ep.known_hosts_name)} -f {shlex.quote(str(where))}`, "
                f"then run `edgepack devices trust {name}`",
            )
        if isinstance(exc, paramiko.PasswordRequiredException):
            return DeviceError(
                f"the key file for {ep.where} is encrypted with a passphrase",
                hint=f"load it into ssh-agent with `ssh-add {shlex.quote(ep.key_files[0]) if ep.key_files else 'KEYFILE'}`",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            used = ", ".join(ep.key_files) if ep.key_files else "ssh-agent and the default keys in ~/.ssh"
            return DeviceError(
                f"authentication refused for {ep.user}@{ep.hostname}:{ep.port} (device {name}); key tried: {used}",
                hint=f"add the public key to ~{ep.user}/.ssh/authorized_keys on the device "
                f"(ssh-copy-id), or re-add the device with --user/--key",
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
                hint="check the host name, or add it as an alias to ~/.ssh/config",
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
                hint=f"check that port {ep.port} is the device's SSH port and that sshd is not overloaded",
            )
        if isinstance(exc, paramiko.SSHException):
            return DeviceError(f"SSH to {name} at {ep.hostname}:{ep.port} failed: {exc}", hint=reach)
        return exc

    def _file_holding(self, host: str) -> Path:
        """Return the known_hosts file that holds HOST's key (the system one takes precedence)."""
        import paramiko

        for path in (system_known_hosts_path(), known_hosts_path()):
            if path.is_file():
                with contextlib.suppress(Exception):
                    if paramiko.HostKeys(str(path)).lookup(host):
                        return path
        return known_hosts_path()

    def close(self) -> None:
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

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
                raise DeviceError(
                    f"cannot open SFTP on {self.name}: {exc}",
                    hint="enable it in the device's sshd_config: `Subsystem sftp internal-sftp`",
                ) from None
            sftp.get_channel().settimeout(self.sftp_stall_s)
            self._sftp = sftp
        return self._sftp

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
        try:
            home = self.sftp().normalize(".")
        except socket.timeout:
            raise self._stalled("finding the login home") from None
        except OSError as exc:
            raise DeviceError(f"SFTP failed on {self.name}: cannot find the login home: {exc}") from None
        return posixpath.normpath(posixpath.join(home, workdir))

    # -- commands --------------------------------------------------------------------------

    def run(self, argv: list[str], timeout: float) -> CommandResult:
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
                    raise DeviceError(
                        f"command timed out after {timeout:g} s on {self.name}: {_short(argv)}",
                        hint="the command was killed; raise the timeout if it needs longer",
                    )
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
        stderr = _text(bytes(err))
        if stderr.startswith(_PID_MARK):
            stderr = stderr.split("\n", 1)[1] if "\n" in stderr else ""
        if code == 127 and argv[0] == self.python:
            raise self._missing_python(argv)
        return CommandResult(code, _text(bytes(out)), stderr, time.perf_counter() - start)

    def _kill(self, chan: paramiko.Channel, err: bytearray) -> None:
        """Kill the command's process group on the device (the pid its runner printed first on stderr).

        Waits at most the connect timeout for the pid line and for the kill itself; a connection
        that is gone leaves nothing to do.
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
        with contextlib.suppress(Exception):
            killer = self._connected().get_transport().open_session(timeout=self.device.connect_timeout_s)
            try:
                killer.exec_command(kill)
                while not killer.exit_status_ready() and time.monotonic() < deadline:
                    time.sleep(0.005)
            finally:
                killer.close()

    # -- files -----------------------------------------------------------------------------

    def _makedirs(self, remote_dir: str) -> None:
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

    def _remote_hashes(self, remote_dir: str, names: list[str]) -> dict[str, str | None]:
        result = self.run([self.python, "-c", HASH_SNIPPET, remote_dir, *names], timeout=120)
        return _json_answer(self, result, "hashing the files already on the device")

    def _upload(self, local: Path, remote: str) -> None:
        sftp = self.sftp()
        tmp = f"{remote}.{secrets.token_hex(4)}{PART_SUFFIX}"
        try:
            sftp.put(str(local), tmp, confirm=True)
            sftp.chmod(tmp, local.stat().st_mode & 0o777)
            try:
                sftp.posix_rename(tmp, remote)
            except OSError:  # no posix-rename extension: plain rename refuses to overwrite
                with contextlib.suppress(OSError):
                    sftp.remove(remote)
                sftp.rename(tmp, remote)
        except Exception as exc:
            if isinstance(exc, socket.timeout):  # the part file stays: it cannot be removed over a dead link
                raise self._stalled(f"writing {remote}") from None
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            if isinstance(exc, DeviceError):
                raise
            raise DeviceError(
                f"SFTP failed on {self.name}: cannot write {remote}: {exc}",
                hint="check free space and permissions in the device's workdir",
            ) from None

    def _remove_tree(self, remote_dir: str) -> None:
        if not remote_dir.startswith(self.workdir + "/"):
            raise DeviceError(f"refusing to delete {remote_dir}: it is outside the workdir {self.workdir}")
        with contextlib.suppress(DeviceError):
            result = self.run(["rm", "-rf", "--", remote_dir], timeout=60)
            if result.exit_code == 0:
                return
        raise DeviceError(f"cannot remove {remote_dir} on {self.name}", hint="remove it by hand")


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

    _quiet_paramiko()
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
        error = SshTransport(device)._connect_error(exc, ep)
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
