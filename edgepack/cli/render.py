"""Shared terminal output for the CLI: consoles and small formatting helpers."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console, ConsoleDimensions

from edgepack.markup import plain  # noqa: F401  (the CLI's modules take the escape from here)

PIPED_WIDTH = 4096  # off a terminal nothing is cut to fit: tables and paths print whole


class FullWidthConsole(Console):
    """A console that keeps the terminal's width on a terminal and prints full values when piped.

    Off a terminal rich assumes 80 columns and shortens table cells ("fami…"); COLUMNS, where set, still wins.
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        if self._width is None and not self.is_terminal and not (self._environ.get("COLUMNS") or "").isdigit():
            return ConsoleDimensions(PIPED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size) -> None:
        Console.size.fset(self, new_size)


console = FullWidthConsole(soft_wrap=True)  # long lines stay whole: paths and messages are copied from them
err_console = FullWidthConsole(stderr=True, soft_wrap=True)


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
