"""Limits on what a bench may ask for, shared by the profile schema and the command line (no imports: the CLI reads it at start).

Past these a bench runs for hours with nothing on screen, or overflows a timer on the device.
The agent checks the same numbers (it cannot import edgepack).
"""

BENCH_LIMITS = {"warmup": 10_000, "runs": 100_000, "min_seconds": 3600.0, "cold_loads": 100}
MAX_THREADS = 1024
MAX_TIMEOUT_S = 24 * 3600.0


def agent_timeout_s(min_seconds: float, cold_loads: int) -> float:
    """Seconds to allow the agent: a fixed allowance for loading and the runtimes' start, plus the requested work.

    Each cold load is a fresh process that imports the runtime and loads the model (seconds on a
    small board); timing runs until MIN_SECONDS have passed, then finishes the requested runs.
    """
    return 300.0 + 2 * min_seconds + 30.0 * (cold_loads + 1)
