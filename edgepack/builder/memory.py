"""The build process's own peak memory, for the manifest and the build summary."""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MB (VmHWM; getrusage where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KB elsewhere
