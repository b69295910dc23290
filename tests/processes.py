"""Look for processes on this machine by their command line (as `pgrep -fx` does), for tests that
check a command was really killed."""

from __future__ import annotations

import time
from pathlib import Path


def pids_running(command: str) -> list[int]:
    """Return the pids of the live processes whose whole command line is COMMAND, its arguments
    joined by spaces (a zombie has none; a shell running it has more)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline == command:
            found.append(int(proc.name))
    return found


def pids_left(command: str, patience_s: float = 10.0) -> list[int]:
    """Return the processes still running COMMAND once they have had PATIENCE_S to go (a kill is
    not instantaneous); an empty list as soon as none is left."""
    deadline = time.monotonic() + patience_s
    while True:
        pids = pids_running(command)
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.02)
