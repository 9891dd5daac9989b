"""Drawing for the self-contained HTML reports (`regimed report`, `regimed evaluate`): a small
SVG builder, the palette and the page's style sheet.

The figures are SVG written here rather than drawn by matplotlib: they are bars, heatmaps and
lines of a few hundred numbers, so a page stays small and byte-for-byte the same for the same
input, and the daemon gains no plotting stack. Every text drawn is HTML-escaped here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

__all__ = [
    "CSS",
    "GAP",
    "INK",
    "MUTED",
    "REGIME_SHADE",
    "SERIES",
    "Svg",
    "clip",
    "date_ticks",
    "escape",
    "mix",
    "text_width",
    "ticks",
]

INK = "#1a202c"
MUTED = "#718096"
GAP = "#e2e8f0"
SERIES = ("#4c78a8", "#f58518", "#54a24b", "#b279a2")
#: The background of the stress regimes' days in the time-series figures.
REGIME_SHADE = {"crash": "#fed7d7", "high_volatility": "#feebc8", "recovery": "#c6f6d5"}
_NARROW = frozenset(" _.,:;-+()[]/'|!")
_LABEL_MAX = 28  # characters of a label drawn in a figure; its tooltip has all of it

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1a202c; margin: 2em auto;
       max-width: 980px; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 2em; }
.meta { color: #4a5568; margin-top: 0; }
.decision { border-left: 6px solid #a0aec0; background: #f7fafc; padding: .6em 1em; }
.decision.promoted { border-color: #2f855a; } .decision.rejected { border-color: #c05621; }
.decision h2 { margin: 0 0 .3em; }
.headline { font-size: 1.1em; } .headline strong { font-size: 1.3em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .2em .7em; border-bottom: 1px solid #e2e8f0; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0; } figcaption { color: #4a5568; font-size: .9em; }
svg { max-width: 100%; height: auto; }
.na { color: #718096; } .missing { color: #718096; font-style: italic; }
code { background: #edf2f7; padding: 0 .25em; }
.day { white-space: nowrap; }
"""


def escape(value: object) -> str:
    """`value` as text safe inside HTML and SVG, quotes included."""
    return html.escape(str(value), quote=True)


def mix(target: str, t: float) -> str:
    """The colour `target` blended into white, `t` in [0, 1] (0 white, 1 the colour)."""
    t = max(0.0, min(1.0, t))
    channels = (int(target[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(255 - (255 - c) * t):02x}" for c in channels)


def text_width(text: str, size: float = 12) -> float:
    """A generous guess at the drawn width of `text` in a sans-serif font (no font metrics
    here): narrow for lower case, digits and common punctuation, wide for the rest."""
    return size * sum(0.62 if c.islower() or c.isdigit() or c in _NARROW else 1.0 for c in text)


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round values (1, 2 or 5 times a power of ten apart) covering [low, high]:
    the axis ticks of a figure.

    >>> ticks(0.43, 0.61)
    [0.4, 0.45, 0.5, 0.55, 0.6, 0.65]
    >>> ticks(0, 1)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    digits = max(0, -math.floor(math.log10(step)) + 1)
    return [round(k * step, digits) for k in range(first, last + 1)]


def date_ticks(days: Sequence[str], most: int = 8) -> list[tuple[int, str]]:
    """The indices of `days` (ISO dates, ascending) where a year begins, or a month when the
    days span less than three years, as (index, label); at most `most`, evenly thinned.

    >>> date_ticks(["2020-01-30", "2020-02-03", "2020-02-04", "2020-03-02"])
    [(1, '2020-02'), (3, '2020-03')]
    """
    if not days:
        return []
    years = len({d[:4] for d in days})
    width = 4 if years > 3 else 7
    found = [(i, d[:width]) for i, d in enumerate(days) if i and d[:width] != days[i - 1][:width]]
    step = max(1, -(-len(found) // most))
    return found[::step]


def clip(label: str) -> str:
    """`label` shortened with an ellipsis to what a figure draws (its tooltip has all)."""
    return label if len(label) <= _LABEL_MAX else label[: _LABEL_MAX - 1] + "\u2026"


class Svg:
    """One figure, sized by what is drawn on it; every text is escaped here."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []
        self.width = 0.0
        self.height = 0.0

    def _grow(self, x: float, y: float) -> None:
        self.width = max(self.width, x)
        self.height = max(self.height, y)

    def rect(self, x: float, y: float, w: float, h: float, fill: str, tip: str = "") -> None:
        inner = f"<title>{escape(tip)}</title>" if tip else ""
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{fill}">'
            f"{inner}</rect>"
        )
        self._grow(x + w, y + h)

    def text(
        self,
        x: float,
        y: float,
        value: str,
        *,
        anchor: str = "start",
        size: float = 12,
        bold: bool = False,
        fill: str = INK,
        tip: str = "",
    ) -> None:
        inner = f"<title>{escape(tip)}</title>" if tip else ""
        weight = ' font-weight="bold"' if bold else ""
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size:g}" '
            f'fill="{fill}"{weight}>{inner}{escape(value)}</text>'
        )
        width = text_width(value, size)
        self._grow(x + {"start": width, "middle": width / 2}.get(anchor, 0.0), y + 4)

    def line(self, x1: float, y1: float, x2: float, y2: float) -> None:
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#a0aec0"/>'
        )

    def bands(
        self, regimes: Sequence[str], x: Callable[[int], float], top: float, height: float
    ) -> None:
        """A shaded band behind each run of days in a stress regime (`REGIME_SHADE`); day i
        spans x(i) to x(i + 1)."""
        i = 0
        while i < len(regimes):
            j = i
            while j + 1 < len(regimes) and regimes[j + 1] == regimes[i]:
                j += 1
            if regimes[i] in REGIME_SHADE:
                width = max(x(j + 1) - x(i), 1.0)
                self.rect(x(i), top, width, height, REGIME_SHADE[regimes[i]], regimes[i])
            i = j + 1

    def render(self) -> str:
        w, h = math.ceil(self.width + 8), math.ceil(self.height + 8)
        return (
            f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'font-family="system-ui, sans-serif"><title>{escape(self.title)}</title>'
            + "".join(self.parts)
            + "</svg>"
        )
