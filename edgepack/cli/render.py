"""Shared terminal output for the CLI: consoles and small formatting helpers."""

from __future__ import annotations

import os
import time
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


def live_console(con: Console) -> Console | None:
    """A console for a line redrawn in place on CON's terminal; None off a terminal (pipes, CI logs).

    Where CON writes to a real file descriptor, the new console writes to a copy of it: a build
    silences descriptors 1 and 2 while a stage runs, and the line must keep ticking through that.
    """
    if not con.is_terminal:
        return None
    try:
        fd = con.file.fileno()
    except (AttributeError, OSError, ValueError):  # a console on an in-memory file (a test's fake terminal)
        return con
    stream = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
    return Console(file=stream, force_terminal=True, color_system=con.color_system, width=con.width, soft_wrap=True)


class LiveStatus:
    """One status line redrawn a few times a second on a terminal: a spinner, what runs, the time it
    has taken (of about how long, where known) and what it does now. Lines printed through `print`
    stay above it. Off a terminal (`active` false) it shows nothing: the caller prints its own lines."""

    def __init__(self, con: Console):
        self.console = live_console(con)
        self._owned = self.console is not None and self.console is not con  # a copy of the terminal's descriptor, closed at the end
        self.label, self.detail, self.expected = "", "", None
        self.started = time.monotonic()
        self._live = None
        self._spinner = None

    @property
    def active(self) -> bool:
        return self.console is not None

    def start(self, label: str, detail: str = "", expected: float | None = None) -> None:
        """Show LABEL as running from now on, with DETAIL (plain text) and the EXPECTED seconds."""
        self.label, self.detail, self.expected, self.started = label, detail, expected, time.monotonic()
        self._show()

    def update(self, detail: str) -> None:
        self.detail = detail
        self._show()

    def print(self, markup: str) -> None:
        """Print a line that stays, above the status line."""
        if self.console is not None:
            self.console.print(markup, highlight=False)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._owned:
            self.console.file.close()
            self.console, self._owned = None, False

    def __rich__(self):
        from rich.text import Text

        elapsed = time.monotonic() - self.started
        clock = f"{elapsed:5.1f} s" + (f" of ~{self.expected:.0f} s" if self.expected else "")
        self._spinner.update(text=Text.assemble((f"{self.label:<13} ", "bold"), (f"{clock}  ", "cyan"), (self.detail, "dim")))
        return self._spinner

    def _show(self) -> None:
        if self.console is None:
            return
        if self._live is None:
            from rich.live import Live
            from rich.spinner import Spinner

            self._spinner = Spinner("dots")
            self._live = Live(self, console=self.console, refresh_per_second=8, transient=True, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        self._live.refresh()  # every step is drawn at least once, however fast the next one comes
