"""How edgepack reaches a device: the Transport interface and what its operations return.

A transport copies files into a working directory on the device (``push``) and runs commands
there (``run``). `edgepack.device.local.LocalTransport` is the built-in ``local`` device and
`edgepack.device.ssh.SshTransport` every other one; `edgepack.device.connect.open_transport`
picks one for a device.

Pushed directories stay on the device as a cache: a file whose sha256 already matches is not
sent again, and a new file is written under a temporary name and renamed into place, so an
interrupted push never leaves a half file under the real name.
"""

from __future__ import annotations

import json
import posixpath
import secrets
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgepack.bundle import sha256_file
from edgepack.device.cancel import check_stop
from edgepack.errors import DeviceError

PART_SUFFIX = ".edgepack-part"
# A part file untouched this long belongs to a push that was killed (a live upload writes to it
# all the time, and SFTP gives up on one stalled for far less): the next push removes it.
STALE_PART_S = 300

# Run on the device with its own Python before a push: remove stale part files in the workdir
# and the bundle directories in it, then print {name: sha256 or null} for the files to push.
PREPARE_SNIPPET = r"""
import glob, hashlib, json, os, sys, time
d, workdir, stale = sys.argv[1], sys.argv[2], float(sys.argv[3])
for p in glob.glob(os.path.join(glob.escape(workdir), "*%s")) + glob.glob(os.path.join(glob.escape(workdir), "*", "*%s")):
    try:
        if time.time() - os.lstat(p).st_mtime > stale:
            os.remove(p)
    except (IOError, OSError):
        pass
out = {}
for name in sys.argv[4:]:
    p = os.path.join(d, name)
    try:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[name] = h.hexdigest()
    except (IOError, OSError):
        out[name] = None
print(json.dumps(out))
""".replace("%s", PART_SUFFIX)


class TimedOut(DeviceError):
    """A command ran past its timeout on the device, and was killed."""


@dataclass
class PushResult:
    """What a push did: where the files are, and how many were sent or already there."""

    remote_dir: str
    files_sent: int
    bytes_sent: int
    files_skipped: int


@dataclass
class CommandResult:
    """The outcome of one command on the device."""

    exit_code: int
    stdout: str
    stderr: str
    seconds: float


class Transport(ABC):
    """A connection to one device: push files and run commands.

    Use it as a context manager; `close` may be called any number of times.
    """

    name: str
    python: str
    workdir: str  # absolute path on the device
    push_method: str = "copy"  # how files reach the device: "copy" (this machine), "sftp", "exec" (no SFTP there)

    @property
    def way(self) -> str:
        """How the device is reached: ``this machine``, ``direct``, or ``via`` its jump hosts."""
        return "this machine"

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection (idempotent)."""

    # -- what each transport provides -----------------------------------------------------

    @abstractmethod
    def run(self, argv: list[str], timeout: float, hold_stdin: bool = False) -> CommandResult:
        """Run ARGV in the device's workdir and wait at most TIMEOUT seconds.

        With HOLD_STDIN the command's stdin stays open (and empty) until it ends, so that it can
        notice when this process goes away (the agent's ``--exit-with-stdin``); else it is at EOF.

        Returns:
            The exit code and output; a non-zero exit is not an error here.

        Raises:
            DeviceError: the command timed out (it is killed), or ``argv[0]`` is the device's
                Python and it does not exist there.
        """

    @abstractmethod
    def _makedirs(self, remote_dir: str) -> None:
        """Create REMOTE_DIR and its parents (mkdir -p)."""

    def _remote_hashes(self, remote_dir: str, names: list[str]) -> dict[str, str | None]:
        """Return the sha256 of each NAME in REMOTE_DIR (None where missing), and sweep stale part files from the workdir."""
        result = self.run([self.python, "-c", PREPARE_SNIPPET, remote_dir, self.workdir, str(STALE_PART_S), *names], timeout=120)
        return json_answer(self, result, "hashing the files already on the device")

    @abstractmethod
    def _upload(self, local: Path, remote: str) -> None:
        """Copy LOCAL to the path REMOTE, through a temporary name (`part_path`) and a rename."""

    # -- shared behaviour -----------------------------------------------------------------

    def remote_path(self, remote_subdir: str, name: str = "") -> str:
        """Return the absolute device path of NAME inside ``<workdir>/<remote_subdir>``."""
        parts = [self.workdir, _relative(remote_subdir, "remote_subdir")]
        if name:
            parts.append(_relative(name, "file name"))
        return posixpath.join(*parts)

    def push(self, files: dict[str, Path], remote_subdir: str) -> PushResult:
        """Copy FILES (name in the remote dir -> local path) into ``<workdir>/<remote_subdir>/``.

        A file already there with the same sha256 is not sent again.

        Raises:
            DeviceError: a local file is missing, a name is not a plain relative path, or the
                device refused a write.
        """
        remote_dir = self.remote_path(remote_subdir)
        local: dict[str, Path] = {}
        for name, path in files.items():
            _relative(name, "file name")
            path = Path(path)
            if not path.is_file():
                raise DeviceError(f"cannot push {path}: no such file", hint="check the path")
            local[name] = path
        remote = self._prepare(remote_dir, list(local))
        todo: list[tuple[Path, str, str]] = []
        for name, path in local.items():
            check_stop(self.name)
            digest = sha256_file(path)
            if remote.get(name) != digest:
                todo.append((path, posixpath.join(remote_dir, name), digest))
        for parent in sorted({posixpath.dirname(target) for _, target, _ in todo} - {remote_dir}):
            self._makedirs(parent)
        self._upload_all(todo)
        return PushResult(
            remote_dir=remote_dir,
            files_sent=len(todo),
            bytes_sent=sum(path.stat().st_size for path, _, _ in todo),
            files_skipped=len(local) - len(todo),
        )

    def _prepare(self, remote_dir: str, names: list[str]) -> dict[str, str | None]:
        """Create REMOTE_DIR and return the sha256 of each NAME in it (None where missing).

        A transport that can do both in one step overrides this.
        """
        self._makedirs(remote_dir)
        return self._remote_hashes(remote_dir, names) if names else {}

    def _upload_all(self, files: list[tuple[Path, str, str]]) -> None:
        """Copy each (LOCAL, REMOTE, SHA256) of FILES with `_upload`, one after the other, stopping between files when asked.

        A transport that can overlap the files' start-up costs overrides this.
        """
        for local, remote, _ in files:
            check_stop(self.name)
            self._upload(local, remote)

    def _missing_python(self, argv: list[str]) -> DeviceError:
        return DeviceError(
            f"no Python at '{argv[0]}' on {self.name}",
            hint=(
                f"install Python 3 there, or give its path: `edgepack devices remove {self.name}` then "
                f"`edgepack devices add {self.name} --host ... --python PATH`"
            ),
        )

    def _timed_out(self, argv: list[str], timeout: float) -> DeviceError:
        return TimedOut(
            f"command timed out after {timeout:g} s on {self.name}: {_short(argv)}",
            hint="the command was killed; raise the timeout if it needs longer",
        )


def json_answer(transport: Transport, result: CommandResult, what: str) -> dict:
    """Return the JSON object a snippet run with the device's Python printed on its last line.

    Raises:
        DeviceError: the command failed or its last line is not JSON.
    """
    lines = result.stdout.strip().splitlines()
    if result.exit_code == 0 and lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    raise DeviceError(
        f"{what} failed on {transport.name} (exit {result.exit_code}): {last}",
        hint=f"the device's Python is '{transport.python}'; it must be Python 3.8 or newer",
    )


def part_path(remote: str) -> str:
    """Return a fresh temporary name beside REMOTE to upload it under before the rename."""
    return f"{remote}.{secrets.token_hex(4)}{PART_SUFFIX}"


def output_text(data: bytes) -> str:
    """Decode a command's output as UTF-8, replacing what is not."""
    return data.decode("utf-8", errors="replace")


def _short(argv: list[str], limit: int = 120) -> str:
    text = shlex.join(argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _relative(name: str, what: str) -> str:
    """Check NAME is a plain relative path inside the directory (no '..', not absolute)."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or name != str(p):
        raise DeviceError(f"bad {what} '{name}': it must be a plain relative path such as 'model.tflite'")
    return name
