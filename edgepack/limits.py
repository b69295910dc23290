"""Limits on what a bench may ask for, shared by the profile schema and the command line (no imports: the CLI reads it at start).

Past these a bench runs for hours with nothing on screen, or overflows a timer on the device.
The agent checks the same numbers (it cannot import edgepack).
"""

BENCH_LIMITS = {"warmup": 10_000, "runs": 100_000, "min_seconds": 3600.0, "cold_loads": 100}
MAX_THREADS = 1024
MAX_TIMEOUT_S = 24 * 3600.0


TRTEXEC_S = 3600.0  # the agent's own limit for a TensorRT engine build (trtexec)


def agent_timeout_s(runs: int, warmup: int, min_seconds: float, cold_loads: int, tensorrt: bool) -> float:
    """Seconds to allow the agent: 900 s for loading and the runtimes' start, plus the requested work.

    Each cold load and each warm load is a fresh process that imports the runtime and loads the
    model (tens of seconds on a small board); timing runs until MIN_SECONDS have passed and the
    runs are done (allowed 0.1 s each); a first TensorRT bench builds its engine.
    """
    return 900.0 + 2 * min_seconds + 60.0 * cold_loads + 0.1 * (runs + warmup) + (TRTEXEC_S if tensorrt else 0.0)
