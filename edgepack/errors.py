"""Errors that reach the user: one message, one hint, one exit code.

Library code raises these; the CLI's error boundary (``edgepack.cli.app``) prints the
message and hint and exits with ``exit_code``. Anything else is a bug.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 1
EXIT_INTERNAL = 3


def debug_enabled() -> bool:
    """True when EDGEPACK_DEBUG asks for tracebacks and the libraries' own output (set and not "0")."""
    import os

    return os.environ.get("EDGEPACK_DEBUG", "") not in ("", "0")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (libraries' messages run to pages), or its type."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


class EdgepackError(Exception):
    """A problem the user can fix: what went wrong, and how to fix it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str | None = None, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []

    def __str__(self) -> str:
        return self.message


class ProfileError(EdgepackError):
    """A target profile is missing, unreadable or invalid."""


class ModelError(EdgepackError):
    """The model file is missing, corrupt or of a kind edgepack cannot read."""


class DataError(EdgepackError):
    """Calibration or evaluation data is missing or does not fit the model."""


class BuildError(EdgepackError):
    """A build stage could not run with the settings given."""


class DeviceError(EdgepackError):
    """A device cannot be reached, trusted or used."""


class GateFailed(EdgepackError):
    """A result was produced but missed a budget: exit 1 so CI can gate on it."""

    exit_code = EXIT_GATE_FAILED
