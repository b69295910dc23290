"""Stopping work on devices from outside: a stop event per thread, checked by the transports.

`edgepack.device.fleet.run_fleet` sets a stop event around each device's work (`stop_on`); the
transports call `check_stop` between steps and while a command runs, kill the command on the
device, and give up with `Cancelled`.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import Iterator

from edgepack.errors import DeviceError


class Cancelled(DeviceError):
    """The work was stopped from outside (Ctrl-C during a fleet run); the remote command was killed."""


# The stop signal of the work running in this thread. A context variable rather than an argument
# because the work between `run_fleet` and a transport (edgepack.benchmark.bench) knows nothing of it;
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


def stop_event() -> threading.Event | None:
    """Return the stop event of the work in this thread, None outside `stop_on`."""
    return _STOP.get()


def stop_requested() -> bool:
    """Return whether the work in this thread has been asked to stop (see `stop_on`)."""
    event = stop_event()
    return event is not None and event.is_set()


def check_stop(where: str) -> None:
    """Raise `Cancelled` if the work in this thread has been asked to stop.

    Raises:
        Cancelled: the stop event is set.
    """
    if stop_requested():
        raise Cancelled(f"{where}: cancelled", hint="stopped on request (Ctrl-C)")
