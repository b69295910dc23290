"""Files to a device without SFTP: streamed over an exec channel into what any POSIX shell has.

Many embedded boards (Buildroot or Yocto images, Dropbear, minimal OpenSSH) have no SFTP
subsystem. `ExecFiles` gives `edgepack.device.ssh.transport.SshTransport` the same file operations over
plain exec channels, with the SFTP path's guarantees:

- each file is streamed into a part file beside its final name (``cat > PART``), its size and
  sha256 checked on the device (``sha256sum``, else the device's Python running the same snippet
  that finds the files already there), then renamed into place (``mv -f``, atomic);
- the device-side script removes its part file on every way out but success: a short stream
  (the connection dropped, the push was interrupted), a wrong hash, a signal;
- a write that makes no progress for the stall time fails instead of hanging;
- files already there with the same sha256 are not sent again (the transport's ``push``).

Every value reaches the remote ``sh`` as a positional parameter, the command line built with shlex.
"""

from __future__ import annotations

import contextlib
import shlex
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgepack.device.cancel import check_stop
from edgepack.device.transport import (
    PART_SUFFIX,
    PREPARE_SNIPPET,
    STALE_PART_S,
    CommandResult,
    json_answer,
    output_text,
    part_path,
)
from edgepack.errors import DeviceError

if TYPE_CHECKING:
    import paramiko

    from edgepack.device.spec import Device

CHUNK = 1 << 17
# Which checksum tools the device has: sha256sum (coreutils, busybox) and the device's Python.
_TOOLS = (
    'command -v sha256sum >/dev/null 2>&1 && echo sha256sum; '
    '"$1" -c "import hashlib, json" >/dev/null 2>&1 && echo python; true'
)
# $1 part, $2 final, $3 mode, $4 size, $5 sha256, $6 tool, $7 python, $8 hashing snippet, $9 workdir.
_RECEIVE = r"""
part=$1 final=$2
trap 'rm -f -- "$part"' EXIT
trap 'rm -f -- "$part"; exit 129' HUP INT TERM PIPE
cat > "$part" || { rm -f -- "$part"; exit 3; }
got=$(wc -c < "$part" | tr -d ' ')
if [ "$got" != "$4" ]; then rm -f -- "$part"; echo "received $got of $4 bytes" >&2; exit 4; fi
if [ "$6" = sha256sum ]; then sum=$(sha256sum < "$part"); else sum=$("$7" -c "$8" "${part%/*}" "$9" $STALE "${part##*/}"); fi
case $sum in *"$5"*) ;; *) rm -f -- "$part"; echo "sha256 differs after the copy" >&2; exit 5 ;; esac
chmod "$3" "$part" && mv -f -- "$part" "$final" || { rm -f -- "$part"; exit 6; }
trap - EXIT
echo edgepack-ok
""".replace("$STALE", str(10**9))  # hashing here sweeps no part file: a queued file's may be waiting its turn
# $1 directory, $2 workdir, $3 stale seconds, then the names: one sha256 (or -) a line, in order.
_HASHES = r"""
d=$1 w=$2 m=$(( $3 / 60 )); shift 3
find "$w" -maxdepth 2 -name "*$PART" -mmin +"$m" -exec rm -f {} + 2>/dev/null
for name in "$@"; do
  s=$(sha256sum < "$d/$name" 2>/dev/null) && echo "${s%% *}" || echo -
done
""".replace("$PART", PART_SUFFIX)


class ExecHost(Protocol):
    """What `ExecFiles` needs of its SSH transport (`SshTransport` is one; it holds an `ExecFiles`)."""

    name: str
    python: str
    workdir: str
    device: Device

    @property
    def sftp_stall_s(self) -> float: ...

    def ssh_client(self) -> paramiko.SSHClient: ...


class ExecFiles:
    """The file operations of an SSH transport over exec channels and the device's shell tools."""

    def __init__(self, transport: ExecHost):
        self.t = transport
        self._tools: set[str] | None = None

    @property
    def stall_s(self) -> float:
        return self.t.sftp_stall_s

    # -- operations ------------------------------------------------------------------------

    def home(self) -> str:
        """Return the login directory (where an exec session starts)."""
        code, out, err = self._call("pwd -P", [])
        if code != 0 or not out.strip().startswith("/"):
            raise DeviceError(f"cannot find the login home on {self.t.name}: {err.strip() or out.strip() or f'exit {code}'}")
        return out.strip().splitlines()[-1]

    def makedirs(self, remote_dir: str) -> None:
        """Create REMOTE_DIR and its parents (``mkdir -p``); the first time, also find the checksum tools."""
        probe = self._tools is None
        script = 'mkdir -p -- "$1" || exit 90' + (f"; shift; {_TOOLS}" if probe else "")
        code, out, err = self._call(script, [remote_dir, self.t.python] if probe else [remote_dir])
        if code != 0:
            raise self._mkdir_error(remote_dir, err, code)
        if probe:
            self._tools = set(out.split()) & {"sha256sum", "python"}

    def tools(self) -> set[str]:
        """Return the checksum tools the device has, of ``sha256sum`` and ``python`` (asked once)."""
        if self._tools is None:
            _, out, _ = self._call(_TOOLS, [self.t.python])
            self._tools = set(out.split()) & {"sha256sum", "python"}
        return self._tools

    def prepare(self, remote_dir: str, names: list[str]) -> dict[str, str | None]:
        """Create REMOTE_DIR, sweep stale part files, and return the sha256 of each NAME in it (None where missing).

        One exec session. With the device's Python this runs the same snippet as the SFTP path;
        without it, sha256sum.
        """
        if not names:
            self.makedirs(remote_dir)
            return {}
        tools = self._checked_tools()
        mkdir = 'mkdir -p -- "$1" || exit 90; '
        if "python" in tools:
            script = mkdir + 'd=$1; shift; exec "$@"'
            args = [remote_dir, self.t.python, "-c", PREPARE_SNIPPET, remote_dir, self.t.workdir, str(STALE_PART_S), *names]
            code, out, err = self._call(script, args, 120)
            if code == 90:
                raise self._mkdir_error(remote_dir, err, code)
            return json_answer(self.t, CommandResult(code, out, err, 0.0), "hashing the files already on the device")
        script = mkdir + _HASHES
        code, out, err = self._call(script, [remote_dir, self.t.workdir, str(STALE_PART_S), *names], 120)
        lines = out.split()
        if code == 90:
            raise self._mkdir_error(remote_dir, err, code)
        if code != 0 or len(lines) != len(names):
            raise DeviceError(f"hashing the files already on {self.t.name} failed: {_last(err) or f'exit {code}'}")
        return {name: (h if h != "-" else None) for name, h in zip(names, lines)}

    def upload_all(self, files: list[tuple[Path, str, str]]) -> None:
        """Stream each (LOCAL, REMOTE, SHA256) through a part file, checked by size and sha256 on the device, then renamed.

        One exec session a file; the next file's session starts while this one streams, so the
        device's login shell starts up in the background (it costs a noticeable part of a
        second on some systems).
        """
        if not files:
            return
        self._checked_tools()
        ahead = self._start(*files[0])
        for i, (local, remote, _) in enumerate(files):
            chan, ahead = ahead, None
            try:
                check_stop(self.t.name)
                if i + 1 < len(files):
                    ahead = self._start(*files[i + 1])
            except BaseException:
                self._abandon(chan, None)
                raise
            try:
                self._stream(chan, local, remote)
            except BaseException as exc:
                if ahead is not None:
                    self._abandon(ahead, exc)
                raise

    def _start(self, local: Path, remote: str, sha256: str) -> paramiko.Channel:
        """Open the exec session that receives LOCAL as REMOTE; it waits for the bytes."""
        import paramiko

        tool = "sha256sum" if "sha256sum" in self.tools() else "python"
        args = [part_path(remote), remote, format(local.stat().st_mode & 0o777, "o"), str(local.stat().st_size), sha256,
                tool, self.t.python, PREPARE_SNIPPET, self.t.workdir]
        chan = self._open(f"starting to write {remote}")
        try:
            chan.exec_command(shlex.join(["sh", "-c", _RECEIVE, "edgepack", *args]))
        except BaseException as exc:
            with contextlib.suppress(Exception):
                chan.close()
            if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
                raise DeviceError(f"cannot run a command on {self.t.name}: {str(exc) or type(exc).__name__}",
                                  hint="check the connection") from None
            raise
        return chan

    def _stream(self, chan: paramiko.Channel, local: Path, remote: str) -> None:
        """Send LOCAL into CHAN's receiving script and wait for its verdict; close CHAN."""
        import paramiko

        size = local.stat().st_size
        sent = 0
        try:
            with open(local, "rb") as fh:
                while block := fh.read(CHUNK):
                    check_stop(self.t.name)
                    chan.sendall(block)
                    sent += len(block)
            chan.shutdown_write()
            code, _, err = self._answer(chan, self.stall_s + size / 5e6, f"checking {remote}")
        except BaseException as exc:
            self._abandon(chan, exc)
            if isinstance(exc, socket.timeout):
                raise self._stalled(f"writing {remote}") from None
            if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
                said = _last(_drain_stderr(chan))
                if said:
                    raise self._write_error(remote, said) from None
                raise DeviceError(
                    f"lost the connection to {self.t.name} while writing {remote} ({sent} of {size} bytes sent): "
                    f"{str(exc) or type(exc).__name__}",
                    hint="check the network link (and the jump hosts on the way), then run again; "
                    "the device removes the partial file itself",
                ) from None
            raise
        finally:
            with contextlib.suppress(Exception):
                chan.close()
        if code != 0:
            raise self._write_error(remote, _last(err) or f"exit {code}")

    # -- helpers ---------------------------------------------------------------------------

    def _checked_tools(self) -> set[str]:
        tools = self.tools()
        if not tools:
            raise DeviceError(
                f"cannot push to {self.t.name} without SFTP: the device has neither sha256sum nor Python "
                f"('{self.t.python}') to check the files it receives",
                hint="install sha256sum (coreutils or busybox) or Python 3 on the device, give its Python with "
                "--python PATH, or enable SFTP in its sshd_config (`Subsystem sftp internal-sftp`)",
            )
        return tools

    def _open(self, doing: str) -> paramiko.Channel:
        import paramiko

        try:
            chan = self.t.ssh_client().get_transport().open_session(timeout=self.stall_s)
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as exc:
            if "timeout" in str(exc).lower():
                raise self._stalled(doing) from None
            raise DeviceError(f"cannot run a command on {self.t.name}: {exc}", hint="check the connection") from None
        chan.settimeout(self.stall_s)
        return chan

    def _call(self, script: str, args: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        """Run ``sh -c SCRIPT`` with ARGS on the device (stdin at EOF); return exit code, stdout, stderr."""
        import paramiko

        chan = self._open("running a shell command")
        try:
            chan.exec_command(shlex.join(["sh", "-c", script, "edgepack", *args]))
            chan.shutdown_write()
            return self._answer(chan, timeout or self.stall_s, "running a shell command")
        except socket.timeout:
            raise self._stalled("running a shell command") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise DeviceError(f"cannot run a command on {self.t.name}: {str(exc) or type(exc).__name__}", hint="check the connection") from None
        finally:
            with contextlib.suppress(Exception):
                chan.close()

    def _answer(self, chan: paramiko.Channel, timeout: float, doing: str) -> tuple[int, str, str]:
        """Read CHAN's output until the command exits; at most TIMEOUT seconds."""
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            while chan.recv_ready():
                out += chan.recv(CHUNK)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(CHUNK)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                if chan.eof_received or chan.closed:
                    break
            if time.monotonic() > deadline:
                raise self._stalled(doing)
            check_stop(self.t.name)
            time.sleep(0.002)
        return chan.recv_exit_status(), output_text(bytes(out)), output_text(bytes(err))

    def _abandon(self, chan: paramiko.Channel, exc: BaseException | None) -> None:
        """Stop an upload cut short (by EXC): send EOF so the device's script sees a short file and removes it; close CHAN.

        Over a dead link (a stall, a lost connection) nothing more can be said; the device's
        script removes its part file when its sshd notices, and the next push sweeps stale ones.
        """
        with contextlib.suppress(Exception):
            transport = self.t.ssh_client().get_transport()
            if not isinstance(exc, socket.timeout) and transport is not None and transport.is_active():
                deadline = time.monotonic() + self.t.device.connect_timeout_s
                chan.shutdown_write()
                while not chan.exit_status_ready() and time.monotonic() < deadline:
                    time.sleep(0.005)
        with contextlib.suppress(Exception):
            chan.close()

    def _stalled(self, doing: str) -> DeviceError:
        return DeviceError(
            f"exec push to {self.t.name} stalled: no progress for {self.stall_s:g} s while {doing}",
            hint="check the network link to the device (is it still up?), then run again; "
            "a slow link is fine, a silent one is not",
        )

    def _mkdir_error(self, remote_dir: str, err: str, code: int) -> DeviceError:
        return DeviceError(
            f"cannot create {remote_dir} on {self.t.name}: {_last(err) or f'exit {code}'}",
            hint="check the device's workdir and its permissions (edgepack devices add --workdir DIR)",
        )

    def _write_error(self, remote: str, reason: str) -> DeviceError:
        return DeviceError(
            f"cannot write {remote} on {self.t.name}: {reason}",
            hint="check free space and permissions in the device's workdir",
        )


def _drain_stderr(chan: paramiko.Channel) -> str:
    err = bytearray()
    with contextlib.suppress(Exception):
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(CHUNK)
    return output_text(bytes(err))


def _last(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else ""
