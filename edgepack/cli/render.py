"""Shared terminal output for the CLI: consoles and small formatting helpers."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from edgepack.markup import plain  # noqa: F401  (the CLI's modules take the escape from here)

console = Console(soft_wrap=True)  # long lines stay whole: paths and messages are copied from them
err_console = Console(stderr=True, soft_wrap=True)


def fmt_num(value: float | None, digits: int = 2) -> str:
    """Format a number for a table; a dash for a missing one."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def shown_path(path) -> str:
    """A path as the user would type it: relative to the working directory where it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
