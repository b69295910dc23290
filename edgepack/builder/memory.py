"""The build's own peak memory, for the manifest and the summary."""

from __future__ import annotations


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (VmHWM; getrusage where /proc has none)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
