"""Plain inline SVG for the class report: a histogram and a heatmap, nothing else.

Hand-written rather than a plotting library: the class report must open offline as one file
with no scripts, and two chart types do not justify a dependency. Every label is escaped here,
so a caller can pass text that came from a submission.
"""
from __future__ import annotations

from html import escape

FONT = "font-family='system-ui,sans-serif' font-size='11'"


def histogram(counts: list[int], labels: list[str], title: str = "", width: int = 360, height: int = 170,
              colour: str = "#3f6fb5", tips: list[str] | None = None) -> str:
    """Bars for `counts`, each with its count above it and its label below (every label is
    drawn when there are at most 10 bins, else every other); `tips` (default: the labels) name
    each bin on hover."""
    top, bottom, left, right = 34, 22, 30, 8
    plot_w, plot_h = width - left - right, height - top - bottom
    most = max(counts, default=0) or 1
    bar_w = plot_w / max(1, len(counts))
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title, quote=True)}'>",
             f"<title>{escape(title)}</title>",
             f"<text x='{left}' y='16' {FONT} font-weight='600'>{escape(title)}</text>",
             f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='#888'/>",
             f"<text x='{left - 4}' y='{top + 4}' {FONT} text-anchor='end' fill='#666'>{most}</text>",
             f"<text x='{left - 4}' y='{top + plot_h}' {FONT} text-anchor='end' fill='#666'>0</text>"]
    step = 1 if len(counts) <= 10 else 2
    for i, (count, label, tip) in enumerate(zip(counts, labels, tips or labels)):
        h = plot_h * count / most
        x = left + i * bar_w
        parts.append(f"<rect class='bar' x='{x + 1:.1f}' y='{top + plot_h - h:.1f}' width='{max(1.0, bar_w - 2):.1f}' "
                     f"height='{h:.1f}' fill='{colour}'><title>{escape(tip)}: {count}</title></rect>")
        if count:
            parts.append(f"<text x='{x + bar_w / 2:.1f}' y='{top + plot_h - h - 3:.1f}' {FONT} "
                         f"text-anchor='middle'>{count}</text>")
        if i % step == 0:
            parts.append(f"<text x='{x + bar_w / 2:.1f}' y='{top + plot_h + 14}' {FONT} text-anchor='middle' "
                         f"fill='#444'>{escape(label)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def heatmap(rows: list[str], columns: list[str], values: list[list[float | None]], texts: list[list[str]],
            tips: list[list[str]], title: str = "") -> str:
    """A grid: one row per `rows` entry, one column per `columns` entry, each cell coloured by
    its value in [0, 1] (red 0, yellow 0.5, green 1; grey for None) with its text inside."""
    cell_w, cell_h = 62, 26
    left = 12 + 7 * max((len(r) for r in rows), default=4)
    top = 24 + 6 * max((len(c) for c in columns), default=4) * 0.75
    width = int(left + cell_w * len(columns) + 10 + 5 * max((len(c) for c in columns), default=0))  # slanted labels
    height = int(top + cell_h * len(rows) + 8)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title, quote=True)}'>",
             f"<title>{escape(title)}</title>"]
    for j, column in enumerate(columns):
        x = left + j * cell_w + cell_w / 2
        parts.append(f"<text x='{x:.1f}' y='{top - 6:.1f}' {FONT} transform='rotate(-40 {x:.1f} {top - 6:.1f})'>"
                     f"{escape(column)}</text>")
    for i, row in enumerate(rows):
        y = top + i * cell_h
        parts.append(f"<text x='{left - 6}' y='{y + cell_h / 2 + 4:.1f}' {FONT} text-anchor='end'>{escape(row)}</text>")
        for j in range(len(columns)):
            value, x = values[i][j], left + j * cell_w
            fill = "#e6e6e6" if value is None else _colour(value)
            ink = "#222" if value is None or 0.25 < value < 0.8 else "#fff"
            parts.append(f"<rect class='cell' x='{x}' y='{y:.1f}' width='{cell_w - 2}' height='{cell_h - 2}' "
                         f"fill='{fill}'><title>{escape(tips[i][j])}</title></rect>"
                         f"<text x='{x + cell_w / 2 - 1:.1f}' y='{y + cell_h / 2 + 3:.1f}' {FONT} "
                         f"text-anchor='middle' fill='{ink}'>{escape(texts[i][j])}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _colour(value: float) -> str:
    """Red (0) through yellow (0.5) to green (1), as hsl hues 0 to 120."""
    value = min(1.0, max(0.0, value))
    lightness = 42 if value < 0.25 or value >= 0.8 else 55
    return f"hsl({120 * value:.0f},65%,{lightness}%)"
