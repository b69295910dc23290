"""Escape text for rich markup: the one escape shared by the command line and the reports.

A base module (it imports nothing of edgepack), so that `results/` can render tables with it
without reaching up into `cli/`.
"""

from __future__ import annotations


def plain(text) -> str:
    """Escape TEXT for rich, so that '[host]:22' or '[old]' in a message prints as written.

    The one escape for the CLI and the reports: every user-supplied value (a name, host, path,
    profile value, message) printed through rich, in markup, a table cell, a column header or a
    title, goes through here; our own numbers and constants need nothing.

    Args:
        text: any value; it is shown as ``str(text)``.

    Returns:
        The text with rich's markup characters escaped.
    """
    from rich.markup import escape

    return escape(str(text))
