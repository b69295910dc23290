"""Shared terminal output for the CLI: consoles and small formatting helpers."""

from __future__ import annotations

from rich.console import Console

console = Console(soft_wrap=True)  # long lines stay whole: paths and messages are copied from them
err_console = Console(stderr=True, soft_wrap=True)


def fmt_num(value: float | None, digits: int = 2) -> str:
    """Format a number for a table; a dash for a missing one."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
