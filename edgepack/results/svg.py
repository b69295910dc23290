"""Drawing primitives for the HTML report's plots: scales, ticks, axes, text widths and the frame.

Every plot is laid out from what it writes: the room left of the lanes fits the longest label and
the room right of them the longest figure, so no text runs past the picture's edge.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Iterable, Optional

PLOT_WIDTH = 480  # the lanes' width; labels and figures get the room they need either side
CHAR_PX = 6.6  # a generous average advance of an 11px sans-serif character, so estimates never fall short
PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]
COLD, WARM = "#4c72b0", "#dd8452"
CHOSEN = "#c44e52"


def esc(text: object) -> str:
    """Escape TEXT for HTML and SVG (attributes included)."""
    return html.escape(str(text), quote=True)


def fmt(value: Optional[float]) -> str:
    """Format a figure to about three significant digits; a dash for a missing one."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    digits = max(0, 3 - int(math.floor(math.log10(abs(value)))) - 1)
    return f"{value:.{min(digits, 4)}f}"


def text_width(text: str) -> float:
    """Estimate the width in pixels of TEXT in the plots' 11px font (on the generous side)."""
    wide = sum(1 for c in text if c.isupper() or c in "mwMW■●○★▲")
    return CHAR_PX * len(text) + 2.0 * wide


@dataclass(frozen=True)
class Frame:
    """The horizontal layout of one plot: label column, lanes, figure column."""

    left: float  # where the lanes start
    right: float  # where the lanes end
    width: float  # the whole picture

    @property
    def figures_x(self) -> float:
        return self.right + 8


def frame(labels: Iterable[str], figures: Iterable[str] = (), notes: Iterable[str] = (), plot_width: float = PLOT_WIDTH) -> Frame:
    """Lay out a plot whose lanes are named by LABELS, with FIGURES written after the lanes and NOTES across the top."""
    left = max([120.0] + [text_width(t) + 14 for t in labels])
    right_room = max([40.0] + [text_width(t) + 16 for t in figures])
    width = max([left + plot_width + right_room] + [text_width(t) + 8 for t in notes])
    return Frame(left, left + plot_width, width)


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Return round tick values covering [LO, HI]."""
    if not hi > lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    out, v = [], first
    while v < hi + step * 0.999:
        out.append(round(v, 12))
        v += step
    return out


def log_ticks(lo: float, hi: float) -> list[float]:
    """Return 1-2-5 ticks covering [LO, HI] (both > 0), from the one at or below LO to the one at or above HI."""
    steps = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1) for m in (1, 2, 5)]
    first = max([t for t in steps if t <= lo * (1 + 1e-9)] or [steps[0]])
    last = min([t for t in steps if t >= hi * (1 - 1e-9)] or [steps[-1]])
    return [t for t in steps if first <= t <= last]


class Scale:
    """Map a value range onto a pixel range, linearly or (LOG) logarithmically."""

    def __init__(self, lo: float, hi: float, px0: float, px1: float, log: bool = False):
        self.lo, self.hi, self.px0, self.px1, self.log = lo, hi if hi > lo else lo + 1.0, px0, px1, log

    def __call__(self, value: float) -> float:
        if self.log:
            f = (math.log(max(value, self.lo)) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        else:
            f = (value - self.lo) / (self.hi - self.lo)
        return self.px0 + f * (self.px1 - self.px0)


def x_axis(scale: Scale, tick_values: list[float], top: float, bottom: float, unit: str) -> str:
    """Draw the x axis under the lanes: grid lines, tick labels and the unit."""
    out = ['<g class="axis">']
    for t in tick_values:
        x = scale(t)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 14:.1f}" text-anchor="middle">{esc(f"{t:g}")}</text>')
    out.append(f'<line x1="{scale.px0:.1f}" x2="{scale.px1:.1f}" y1="{bottom:.1f}" y2="{bottom:.1f}"/>')
    out.append(f'<text x="{scale.px1:.1f}" y="{bottom + 28:.1f}" text-anchor="end">{esc(unit)}</text></g>')
    return "".join(out)


def svg(plot: str, width: float, height: float, body: list[str], label: str) -> str:
    """Wrap BODY as the report's plot PLOT (the class and data attribute the page and its checks find it by)."""
    return (
        f'<svg class="plot" data-plot="{plot}" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        f'role="img" aria-label="{esc(label)}">' + "".join(body) + "</svg>"
    )
