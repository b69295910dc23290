"""How edgepack reaches a device: the Transport interface and the local (subprocess) one.

A transport copies files into a working directory on the device (``push``), runs commands there
(``run``) and hands out scratch directories (``scratch``). `open_transport` picks the local one for
the built-in ``local`` device and `edgepack.device.ssh.SshTransport` for every other device.

Pushed directories stay on the device as a cache: a file whose sha256 already matches is not
sent again, and a new file is written under a temporary name and renamed into place, so an
interrupted push never leaves a half file under the real name.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import posixpath
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterator

from edgepack.bundle import sha256_file
from edgepack.errors import DeviceError

if TYPE_CHECKING:
    from edgepack.device.inventory import Device

SCRATCH_PREFIX = ".edgepack-scratch-"
PART_SUFFIX = ".edgepack-part"

# Run on the device with its own Python: print {name: sha256 or null} for the files in a directory.
HASH_SNIPPET = r"""
import hashlib, json, os, sys
d = sys.argv[1]
out = {}
for name in sys.argv[2:]:
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
"""

# Run on the device with its own Python: what it is and which runtimes import there.
PROBE_SNIPPET = r"""
import json, os, platform, shutil, subprocess, sys
RUNTIMES = ["ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime", "numpy"]
code = ("import importlib, sys; m = importlib.import_module(sys.argv[1]); "
        "v = getattr(m, '__version__', None)\n"
        "if v is None:\n"
        "    try:\n"
        "        from importlib.metadata import version; v = version(sys.argv[1].replace('_', '-'))\n"
        "    except Exception: v = '?'\n"
        "print(v)")
runtimes = {}
for name in RUNTIMES:
    try:
        # One process per import: a broken wheel may crash its importer (illegal instruction).
        p = subprocess.run([sys.executable, "-c", code, name], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=300)
        err = p.stderr.decode("utf-8", "replace").strip().splitlines()
        if p.returncode == 0:
            runtimes[name] = {"ok": True, "version": p.stdout.decode().strip().splitlines()[-1]}
        else:
            runtimes[name] = {"ok": False, "error": err[-1] if err else "exit %d" % p.returncode}
    except Exception as e:
        runtimes[name] = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
mem = {}
try:
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            mem[k] = int(v.split()[0]) * 1024
except (IOError, OSError, ValueError):
    pass
du = shutil.disk_usage(".")
print(json.dumps({
    "arch": platform.machine(),
    "system": platform.system(),
    "release": platform.release(),
    "python": platform.python_version(),
    "python_path": sys.executable,
    "workdir": os.getcwd(),
    "cpu_count": os.cpu_count(),
    "disk_free_bytes": du.free,
    "memory_total_bytes": mem.get("MemTotal"),
    "memory_available_bytes": mem.get("MemAvailable", mem.get("MemFree")),
    "runtimes": runtimes,
}))
"""


class Cancelled(DeviceError):
    """The work was stopped from outside (Ctrl-C during a fleet run); the remote command was killed."""


# The stop signal of the work running in this thread. A context variable rather than an argument
# because the work between `run_fleet` and a transport (edgepack.bench.bench) knows nothing of it;
# each fleet worker thread sets its own, so it is never shared state.
_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("edgepack_stop", default=None)


@contextlib.contextmanager
def stop_on(event: threading.Event) -> Iterator[None]:
    """Make transports used inside the block give up (raising `Cancelled`) once EVENT is set.

    A running command is killed on the device, a push stops between files, a connection is not
    started.
    """
    token = _STOP.set(event)
    try:
        yield
    finally:
        _STOP.reset(token)


def stop_requested() -> bool:
    """True when the work in this thread has been asked to stop (see `stop_on`)."""
    event = _STOP.get()
    return event is not None and event.is_set()


def check_stop(where: str) -> None:
    """Raise `Cancelled` if the work in this thread has been asked to stop.

    Raises:
        Cancelled: the stop event is set.
    """
    if stop_requested():
        raise Cancelled(f"{where}: cancelled", hint="stopped on request (Ctrl-C)")


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


@dataclass
class RuntimeStatus:
    name: str
    ok: bool
    version: str | None = None
    error: str | None = None


@dataclass
class DeviceInfo:
    """What `probe` found on a device."""

    device: str
    arch: str
    system: str
    release: str
    python: str
    python_path: str
    workdir: str
    cpu_count: int | None
    disk_free_bytes: int
    memory_total_bytes: int | None
    memory_available_bytes: int | None
    runtimes: list[RuntimeStatus] = field(default_factory=list)
    seconds: float = 0.0


class Transport(ABC):
    """A connection to one device: push files, run commands, borrow scratch directories.

    Use it as a context manager; `close` may be called any number of times.
    """

    name: str
    python: str
    workdir: str  # absolute path on the device

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection (idempotent)."""

    # -- what each transport provides -----------------------------------------------------

    @abstractmethod
    def run(self, argv: list[str], timeout: float) -> CommandResult:
        """Run ARGV in the device's workdir and wait at most TIMEOUT seconds.

        Returns:
            The exit code and output; a non-zero exit is not an error here.

        Raises:
            DeviceError: the command timed out (it is killed), or ``argv[0]`` is the device's
                Python and it does not exist there.
        """

    @abstractmethod
    def _makedirs(self, remote_dir: str) -> None:
        """Create REMOTE_DIR and its parents (mkdir -p)."""

    @abstractmethod
    def _remote_hashes(self, remote_dir: str, names: list[str]) -> dict[str, str | None]:
        """Return the sha256 of each NAME in REMOTE_DIR, None where the file is missing."""

    @abstractmethod
    def _upload(self, local: Path, remote: str) -> None:
        """Copy LOCAL to the path REMOTE, through a temporary name and a rename."""

    @abstractmethod
    def _remove_tree(self, remote_dir: str) -> None:
        """Delete REMOTE_DIR and everything in it; a missing directory is fine."""

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
        self._makedirs(remote_dir)
        remote = self._remote_hashes(remote_dir, list(local)) if local else {}
        sent = skipped = sent_bytes = 0
        for name, path in local.items():
            check_stop(self.name)
            if remote.get(name) == sha256_file(path):
                skipped += 1
                continue
            target = posixpath.join(remote_dir, name)
            parent = posixpath.dirname(target)
            if parent != remote_dir:
                self._makedirs(parent)
            self._upload(path, target)
            sent += 1
            sent_bytes += path.stat().st_size
        return PushResult(remote_dir=remote_dir, files_sent=sent, bytes_sent=sent_bytes, files_skipped=skipped)

    @contextlib.contextmanager
    def scratch(self) -> Iterator[str]:
        """Yield a new empty directory under the workdir; it is removed on exit, even on failure."""
        path = posixpath.join(self.workdir, SCRATCH_PREFIX + secrets.token_hex(6))
        self._makedirs(path)
        try:
            yield path
        finally:
            self._remove_tree(path)

    def _missing_python(self, argv: list[str]) -> DeviceError:
        return DeviceError(
            f"no Python at '{argv[0]}' on {self.name}",
            hint=(
                f"install Python 3 there, or give its path: `edgepack devices remove {self.name}` then "
                f"`edgepack devices add {self.name} --host ... --python PATH`"
            ),
        )


def probe(transport: Transport, timeout: float = 600.0) -> DeviceInfo:
    """Run one small Python program on the device: arch, Python, runtimes, free disk and memory.

    Raises:
        DeviceError: the program could not run or did not answer with its report.
    """
    result = transport.run([transport.python, "-c", PROBE_SNIPPET], timeout=timeout)
    data = _json_answer(transport, result, "the device check")
    runtimes = [RuntimeStatus(name=k, **v) for k, v in data.pop("runtimes").items()]
    return DeviceInfo(device=transport.name, runtimes=runtimes, seconds=result.seconds, **data)


def _json_answer(transport: Transport, result: CommandResult, what: str) -> dict:
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


def _relative(name: str, what: str) -> str:
    """Check NAME is a plain relative path inside the directory (no '..', not absolute)."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or name != str(p):
        raise DeviceError(f"bad {what} '{name}': it must be a plain relative path such as 'model.tflite'")
    return name


class LocalTransport(Transport):
    """This machine, through subprocesses: the built-in ``local`` device."""

    def __init__(self, name: str = "local", python: str | None = None, workdir: str | Path | None = None):
        from edgepack.device.inventory import local_workdir

        self.name = name
        self.python = python or sys.executable
        self.workdir = str(Path(workdir).expanduser().resolve() if workdir else local_workdir())
        self._makedirs(self.workdir)

    def run(self, argv: list[str], timeout: float) -> CommandResult:
        if not argv:
            raise DeviceError("no command to run")
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills its children too
            )
        except FileNotFoundError:
            if argv[0] == self.python:
                raise self._missing_python(argv) from None
            return CommandResult(127, "", f"{argv[0]}: command not found\n", time.perf_counter() - start)
        except PermissionError:
            return CommandResult(126, "", f"{argv[0]}: permission denied\n", time.perf_counter() - start)
        deadline = start + timeout
        # Under a stop event (a fleet run), wake up now and then to look at it; else wait in one go.
        slice_s = 0.1 if _STOP.get() is not None else None
        try:
            while True:
                left = deadline - time.perf_counter()
                try:
                    out, err = proc.communicate(timeout=max(0.0, min(left, slice_s or left)))
                    break
                except subprocess.TimeoutExpired:  # communicate may be called again: output is kept
                    if time.perf_counter() >= deadline:
                        raise DeviceError(
                            f"command timed out after {timeout:g} s on {self.name}: {_short(argv)}",
                            hint="the command was killed; raise the timeout if it needs longer",
                        ) from None
                    check_stop(self.name)
        except BaseException:  # timeout, stop, Ctrl-C, anything: never leave the command running
            _kill_group(proc)
            raise
        return CommandResult(proc.returncode, _text(out), _text(err), time.perf_counter() - start)

    def _makedirs(self, remote_dir: str) -> None:
        try:
            Path(remote_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceError(f"cannot create {remote_dir} on {self.name}: {exc.strerror}") from None

    def _remote_hashes(self, remote_dir: str, names: list[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for name in names:
            path = Path(remote_dir, name)
            out[name] = sha256_file(path) if path.is_file() else None
        return out

    def _upload(self, local: Path, remote: str) -> None:
        tmp = f"{remote}.{secrets.token_hex(4)}{PART_SUFFIX}"
        try:
            shutil.copyfile(local, tmp)
            shutil.copymode(local, tmp)
            os.replace(tmp, remote)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise DeviceError(f"cannot write {remote} on {self.name}: {exc.strerror}") from None

    def _remove_tree(self, remote_dir: str) -> None:
        shutil.rmtree(remote_dir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.communicate(timeout=5)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _short(argv: list[str], limit: int = 120) -> str:
    import shlex

    text = shlex.join(argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def open_transport(
    device: Device | str,
    *,
    inventory: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Transport:
    """Connect to DEVICE (a Device, or a name looked up in the inventory) and return its transport.

    The built-in ``local`` device gives a `LocalTransport`; every other device an
    `edgepack.device.ssh.SshTransport`, already connected.

    Raises:
        DeviceError: unknown device, or the device cannot be reached or trusted.
    """
    from edgepack.device.inventory import LOCAL, get_device

    if isinstance(device, str):
        device = get_device(device, inventory) if device != LOCAL else get_device(LOCAL)
    if device.is_local:
        return LocalTransport(name=device.name, python=device.python, workdir=device.workdir)
    from edgepack.device.ssh import SshTransport

    check_stop(device.name)
    if progress:
        progress(f"connecting to {device.name} ({device.describe()})")
    transport = SshTransport(device)
    try:
        transport.connect()
    except BaseException:
        transport.close()
        raise
    return transport
