"""The built-in ``local`` device: this machine, reached through subprocesses."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgepack.device.cancel import check_stop, stop_event
from edgepack.device.spec import local_workdir
from edgepack.device.transport import CommandResult, Transport, output_text, part_path
from edgepack.errors import DeviceError


class LocalTransport(Transport):
    """This machine, through subprocesses: the built-in ``local`` device."""

    def __init__(self, name: str = "local", python: str | None = None, workdir: str | Path | None = None):
        self.name = name
        self.python = python or sys.executable
        self.workdir = str(Path(workdir).expanduser().resolve() if workdir else local_workdir())
        self._makedirs(self.workdir)

    def run(self, argv: list[str], timeout: float, hold_stdin: bool = False) -> CommandResult:
        if not argv:
            raise DeviceError("no command to run")
        start = time.perf_counter()
        # Our end of the pipe closes when this process ends, however it ends: the command sees EOF.
        stdin, held = os.pipe() if hold_stdin else (subprocess.DEVNULL, None)
        try:
            return self._run(argv, timeout, start, stdin)
        finally:
            if held is not None:
                os.close(stdin)
                os.close(held)

    def _run(self, argv: list[str], timeout: float, start: float, stdin) -> CommandResult:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=stdin,
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
        slice_s = 0.1 if stop_event() is not None else None
        try:
            while True:
                left = deadline - time.perf_counter()
                try:
                    out, err = proc.communicate(timeout=max(0.0, min(left, slice_s or left)))
                    break
                except subprocess.TimeoutExpired:  # communicate may be called again: output is kept
                    if time.perf_counter() >= deadline:
                        raise self._timed_out(argv, timeout) from None
                    check_stop(self.name)
        except BaseException:  # timeout, stop, Ctrl-C, anything: never leave the command running
            _kill_group(proc)
            raise
        return CommandResult(proc.returncode, output_text(out), output_text(err), time.perf_counter() - start)

    def _makedirs(self, remote_dir: str) -> None:
        try:
            Path(remote_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceError(f"cannot create {remote_dir} on {self.name}: {exc.strerror}") from None

    def _upload(self, local: Path, remote: str) -> None:
        tmp = part_path(remote)
        try:
            shutil.copyfile(local, tmp)
            shutil.copymode(local, tmp)
            os.replace(tmp, remote)
        except BaseException as exc:  # Ctrl-C or a stop request too: leave no part file behind
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise DeviceError(f"cannot write {remote} on {self.name}: {exc.strerror}") from None
            raise


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.communicate(timeout=5)
