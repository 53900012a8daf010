"""Tables typeset on PDF pages: monospaced rows (one text object per printed line), booktabs rules.

A monospaced font makes the layout exact and cheap: column widths are character counts, each
printed line is one text object (drawing thousands of per-cell texts was the slow part), and the
text stays text (TrueType in the PDF), so it is searchable and extractable. The font shrinks from
8.5 pt to 7 pt (never smaller) to fit the page width; a table still too wide is split into column
blocks that repeat the leading text columns (the rank and estimator of a ranking). Long text
cells wrap; rows continue on the next page under a
repeated header; rows whose status is ``failed`` are shaded; a thin rule separates row groups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from .export import failed_rows, fmt_value, group_starts, numeric_columns

__all__ = ["Typeset", "typeset", "draw_rows", "PAGE", "MARGIN", "MONO"]

PAGE = (11.69, 8.27)  # A4 landscape, inches
MARGIN = 0.5
MONO = "DejaVu Sans Mono"  # ships with matplotlib; every glyph advances 0.602 em
_ADVANCE = 0.602
_SIZES = (8.5, 8.0, 7.5, 7.0)  # never below 7 pt: a wider table is split into column blocks instead
_GAP = 2  # spaces between columns


@dataclass
class Typeset:
    """A table laid out in characters: cell lines, widths, column blocks, font size, flags per row."""

    top: list[str]
    sub: list[str]
    num: list[bool]
    cells: list[list[list[str]]]
    widths: list[int]
    blocks: list[list[int]]
    size: float
    failed: list[bool]
    starts: list[bool]

    @property
    def line_h(self) -> float:
        return self.size * 1.32 / 72.0

    def row_h(self, i: int) -> float:
        return self.line_h * max(len(c) for c in self.cells[i])

    def head_h(self, cols) -> float:
        return self.line_h * (3.05 if any(self.top[j] for j in cols) else 1.7)


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` characters, broken after spaces or commas where possible (specs have no spaces)."""
    tokens = [t for t in re.split(r"(?<=[ ,])", str(text)) if t]
    lines, line = [], ""
    for tok in tokens:
        while len(tok) > width:  # a single over-long token: hard split
            if line:
                lines.append(line)
                line = ""
            lines.append(tok[:width])
            tok = tok[width:]
        if len(line) + len(tok.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += tok
    return [ln for ln in lines + [line.rstrip()] if ln] or [""]


def _headers(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    if isinstance(df.columns, pd.MultiIndex):
        return [str(c[0]) for c in df.columns], [" ".join(str(p) for p in c[1:]) for c in df.columns]
    return [""] * df.shape[1], [str(c) for c in df.columns]


def _spans(top: list[str], cols: list[int]):
    """(first, last) positions in ``cols`` of each run of equal top labels."""
    k = 0
    while k < len(cols):
        end = k
        while end + 1 < len(cols) and top[cols[end + 1]] == top[cols[k]]:
            end += 1
        yield k, end
        k = end + 1


def _total(w: list[int], cols) -> int:
    cols = list(cols)
    return sum(w[c] for c in cols) + _GAP * (len(cols) - 1)


def typeset(df: pd.DataFrame, sep: str | None = None) -> Typeset:
    """Lay ``df`` out for a page: wrap text cells, size columns, pick the font, split too-wide tables."""
    top, sub = _headers(df)
    num = numeric_columns(df)
    wrap = max(24, min(100, 160 // max(1, len(num))))  # text cells wrap narrower in wider tables
    cells = [[[fmt_value(v)] if n else _wrap(fmt_value(v), wrap) for v, n in zip(row, num)]
             for row in df.itertuples(index=False, name=None)]
    w = [max([len(sub[j])] + [len(line) for r in cells for line in r[j]]) for j in range(len(sub))]
    for a, b in _spans(top, list(range(len(w)))):  # a spanning label widens the last column of its span
        w[b] += max(0, len(top[a]) - _total(w, range(a, b + 1)))
    width_in = PAGE[0] - 2 * MARGIN
    for size in _SIZES:
        avail = int(width_in / (_ADVANCE * size / 72.0))
        if _total(w, range(len(w))) <= avail:
            break
    # leading columns repeated in every block: those before the first numeric column that follows a text column
    # (rank, rank at budget, estimator), at most 3
    first_text = next((j for j, n in enumerate(num) if not n), 0)
    lead = max(1, min(next((j for j, n in enumerate(num) if n and j > first_text), len(num)), 3))
    blocks, cur = [], list(range(lead))
    for j in range(lead, len(w)):
        if _total(w, cur + [j]) > avail and len(cur) > lead:
            blocks.append(cur)
            cur = list(range(lead))
        cur.append(j)
    blocks.append(cur)
    return Typeset(top, sub, num, cells, w, blocks, size, list(failed_rows(df)), list(group_starts(df, sep)))


def _line(ts: Typeset, parts: list[str], cols: list[int]) -> str:
    return (" " * _GAP).join(p.rjust(ts.widths[j]) if ts.num[j] else p.ljust(ts.widths[j])
                             for p, j in zip(parts, cols)).rstrip()


def draw_rows(fig: Figure, y: float, ts: Typeset, cols: list[int], start: int,
              bottom: float = MARGIN) -> tuple[int, float]:
    """Header and as many rows from ``start`` as fit above ``bottom``; returns (next row, y below the table)."""
    W, H = PAGE
    char = _ADVANCE * ts.size / 72.0
    lh = ts.line_h
    right = MARGIN + char * _total(ts.widths, cols)

    def put(text, y0, **kw):
        fig.text(MARGIN / W, y0 / H, text, fontsize=ts.size, family=MONO, va="top", **kw)

    def rule(x1, x2, y0, lw, color="black"):
        fig.add_artist(Line2D([x1 / W, x2 / W], [y0 / H, y0 / H], lw=lw, color=color))

    rule(MARGIN, right, y, 1.0)
    y -= lh * 0.3
    if any(ts.top[j] for j in cols):
        text, pos = "", 0
        for a, b in _spans(ts.top, cols):
            width = _total(ts.widths, cols[a:b + 1])
            label = ts.top[cols[a]]
            text += label.center(width) + " " * _GAP
            if label:
                rule(MARGIN + (pos + 0.3) * char, MARGIN + (pos + width - 0.3) * char, y - lh * 0.98, 0.5)
            pos += width + _GAP
        put(text.rstrip(), y, weight="bold")
        y -= lh * 1.35
    put(_line(ts, [ts.sub[j] for j in cols], cols), y, weight="bold")
    y -= lh * 1.1
    rule(MARGIN, right, y, 0.6)
    y -= lh * 0.25
    i = start
    while i < len(ts.cells):
        h = ts.row_h(i)
        if y - h < bottom and i > start:
            break
        if ts.starts[i] and i > start:
            y -= lh * 0.3
            rule(MARGIN, right, y + lh * 0.15, 0.4, "0.55")
        if ts.failed[i]:
            fig.add_artist(Rectangle((MARGIN / W, (y - h) / H), (right - MARGIN) / W, h / H,
                                     transform=fig.transFigure, color="#fde8e8", zorder=0, lw=0))
        for k in range(max(len(c) for c in ts.cells[i])):
            parts = [ts.cells[i][j][k] if k < len(ts.cells[i][j]) else "" for j in cols]
            put(_line(ts, parts, cols), y - k * lh, color="#9b1c1c" if ts.failed[i] else "black")
        y -= h
        i += 1
    rule(MARGIN, right, y - lh * 0.2, 1.0)
    return i, y - lh * 0.2
