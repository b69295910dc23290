"""Shared terminal output for the CLI: consoles and small formatting helpers."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

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


def plain(text) -> str:
    """Escape TEXT for rich, so that '[host]:22' or '[old]' in a message prints as written.

    The one escape for the CLI: every user-supplied value (a name, host, path, profile value,
    message) printed through rich, in markup, a table cell, a column header or a title, goes
    through here; our own numbers and constants need nothing.
    """
    return escape(str(text))
