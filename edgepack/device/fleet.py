"""Many devices at once: run one piece of work on each, with a bounded number of connections.

`run_fleet` knows nothing about benches: it takes the device names and a function ``work(name,
step)`` that does the job for one device (connecting, pushing, measuring) and reports progress
through ``step(message)``. Each device's work runs in a thread of a pool of ``max_connections``
threads, so at most that many devices are connected at any time. A device whose work raises
does not stop the others: its error is kept in its `DeviceRun`, and every device ends either
``done`` with a result or ``failed`` with an error.

Progress is reported from the calling thread only, through ``on_change(runs)``, so a caller may
draw it (a live table) without locking.

Ctrl-C (or any exception in the calling thread) stops the fleet: devices not started are dropped,
and the running ones are told to stop (`edgepack.device.cancel.stop_on`): their transports
kill the command running on the device and give up with `Cancelled` at the next check, so the
interrupt returns once each has cleaned up, not when each bench would have finished.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Generic, Optional, TypeVar

from edgepack.device.cancel import check_stop, stop_on
from edgepack.errors import DeviceError, EdgepackError, debug_enabled

T = TypeVar("T")
Step = Callable[[str], None]

WAITING, RUNNING, DONE, FAILED = "waiting", "running", "done", "failed"
DEFAULT_MAX_CONNECTIONS = 8


@dataclass
class DeviceRun(Generic[T]):
    """One device's part of a fleet run: its state, its last step, and its result or error."""

    device: str
    state: str = WAITING
    step: str = ""
    started: Optional[float] = None  # time.monotonic()
    finished: Optional[float] = None
    result: Optional[T] = None
    error: Optional[EdgepackError] = None

    @property
    def seconds(self) -> Optional[float]:
        """Seconds spent so far (or in all, once finished); None while waiting."""
        if self.started is None:
            return None
        return (self.finished or time.monotonic()) - self.started

    @property
    def ok(self) -> bool:
        return self.state == DONE


def run_fleet(
    devices: list[str],
    work: Callable[[str, Step], T],
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    on_change: Callable[[list[DeviceRun[T]]], None] | None = None,
    on_done: Callable[[DeviceRun[T]], None] | None = None,
    poll_s: float = 0.25,
) -> list[DeviceRun[T]]:
    """Run WORK(device, step) for every device, at most MAX_CONNECTIONS at a time.

    Args:
        devices: device names, each once.
        work: does the job for one device and returns its result; raising marks the device failed.
        max_connections: how many devices are worked on at once (>= 1).
        on_change: called in this thread with every device's state whenever it may have changed.
        on_done: called in this thread once per device as it finishes (done or failed).
        poll_s: how often on_change is called while work is going on.

    Returns:
        One `DeviceRun` per device, in the order given.

    Raises:
        DeviceError: max_connections is below 1.
    """
    if max_connections < 1:
        raise DeviceError(f"--max-connections must be at least 1, not {max_connections}")
    runs = {name: DeviceRun(name) for name in devices}
    lock = threading.Lock()
    stop = threading.Event()

    def changed() -> None:
        if on_change:
            with lock:
                snapshot = [DeviceRun(**vars(r)) for r in runs.values()]
            on_change(snapshot)

    def one(name: str) -> T:
        run = runs[name]
        with lock:
            run.state, run.started = RUNNING, time.monotonic()

        def step(message: str) -> None:
            check_stop(name)  # between steps, a stopped fleet goes no further
            with lock:
                run.step = message

        with stop_on(stop):
            check_stop(name)
            return work(name, step)

    changed()
    pool = cf.ThreadPoolExecutor(max_workers=min(max_connections, max(1, len(devices))), thread_name_prefix="edgepack-fleet")
    try:
        futures = {pool.submit(one, name): name for name in devices}
        pending = set(futures)
        while pending:
            finished, pending = cf.wait(pending, timeout=poll_s, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                run = runs[futures[future]]
                error = future.exception()
                with lock:
                    run.finished = time.monotonic()
                    if error is None:
                        run.state, run.result, run.step = DONE, future.result(), ""
                    else:
                        run.state, run.error = FAILED, _as_edgepack_error(run.device, error)
                if on_done:
                    on_done(run)
            changed()
    finally:
        # Normally every device is finished here and this changes nothing. On Ctrl-C (or an error
        # in a callback): devices not yet started are dropped, the running ones stop at their next
        # check (their remote commands killed), and we wait for that cleanup, not for their benches.
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    return list(runs.values())


def _as_edgepack_error(device: str, error: BaseException) -> EdgepackError:
    if isinstance(error, EdgepackError):
        return error
    # Not one of ours (a socket error deep in a library, or a bug): keep it, named, for this device.
    if debug_enabled():
        print(f"edgepack: unexpected error on device {device}:", file=sys.stderr)
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
        hint = "its traceback is printed above"
    else:
        hint = "run again with EDGEPACK_DEBUG=1 for the traceback"
    return DeviceError(f"{device}: {type(error).__name__}: {error}", hint=hint)
