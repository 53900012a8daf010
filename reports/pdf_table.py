"""Tables typeset as PDF pages with matplotlib text (booktabs style), split across pages and column blocks.

Column widths come from measured glyph advances (per-character widths of the default font, so the
layout is deterministic and fast); the font shrinks from 7.5 pt to 5.5 pt to fit the page width,
and a table still too wide is split into column blocks that repeat the leading text columns.
Long text cells wrap; rows paginate with the header repeated. Rows whose status is ``failed``
are shaded. Text stays text (TrueType in the PDF), so it is searchable and extractable.
"""

from __future__ import annotations

import textwrap
from functools import lru_cache

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Rectangle
from matplotlib.textpath import text_to_path

from .export import _failed_rows, _numeric, fmt_value

__all__ = ["table_pages", "PAGE", "MARGIN"]

PAGE = (11.69, 8.27)  # A4 landscape, inches
MARGIN = 0.5
_SIZES = (7.5, 7.0, 6.5, 6.0, 5.5)
_WRAP = 46


@lru_cache(maxsize=None)
def _char_width(ch: str, bold: bool) -> float:
    prop = FontProperties(size=100, weight="bold" if bold else "normal")
    return text_to_path.get_text_width_height_descent(ch, prop, ismath=False)[0] / 100.0


def _width(text: str, size: float, bold: bool = False) -> float:
    """Width in inches of the widest line of ``text`` at ``size`` points."""
    return max(sum(_char_width(c, bold) for c in line) for line in text.split("\n")) * size / 72.0


def _headers(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    if isinstance(df.columns, pd.MultiIndex):
        return [str(c[0]) for c in df.columns], [" ".join(str(p) for p in c[1:]) for c in df.columns]
    return [""] * df.shape[1], [str(c) for c in df.columns]


def _blocks(widths: list[float], lead: int, avail: float) -> list[list[int]]:
    """Column index blocks that fit ``avail`` inches, each starting with the ``lead`` text columns."""
    if sum(widths) <= avail:
        return [list(range(len(widths)))]
    base = list(range(lead))
    blocks, cur, used = [], list(base), sum(widths[:lead])
    for j in range(lead, len(widths)):
        if used + widths[j] > avail and len(cur) > lead:
            blocks.append(cur)
            cur, used = list(base), sum(widths[:lead])
        cur.append(j)
        used += widths[j]
    blocks.append(cur)
    return blocks


def table_pages(df: pd.DataFrame, title: str, caption: str, notes: list[str] = ()) -> list[Figure]:
    """The table as one or more A4-landscape pages (``title`` and ``notes`` on the first page only)."""
    top, sub = _headers(df)
    num = _numeric(df)
    failed = _failed_rows(df)
    cells = [[fmt_value(v) if n else textwrap.fill(fmt_value(v), _WRAP) for v, n in zip(row, num)]
             for row in df.itertuples(index=False, name=None)]
    avail = PAGE[0] - 2 * MARGIN
    lead = next((j for j, n in enumerate(num) if n), len(num)) or 1
    for size in _SIZES:
        pad = size / 72.0 * 0.9
        widths = [max([_width(sub[j], size, True)] + [_width(r[j], size) for r in cells]) + pad
                  for j in range(len(sub))]
        if sum(widths) <= avail:
            break
    blocks = _blocks(widths, min(lead, 3), avail)
    line_h = size / 72.0 * 1.45
    heights = [line_h * (max(c.count("\n") for c in r) + 1) + line_h * 0.25 for r in cells] if cells else []
    pages = []
    for b_i, cols in enumerate(blocks):
        start = 0
        while start < len(cells) or start == 0:
            fig = Figure(figsize=PAGE)
            y = PAGE[1] - MARGIN
            head = title if not pages else f"{title} (continued)"
            fig.text(MARGIN / PAGE[0], y / PAGE[1], head, fontsize=12, weight="bold", va="top")
            y -= 0.3
            lines = ([textwrap.fill(caption, 150)] if caption else []) + ([textwrap.fill(n, 150) for n in notes]
                                                                          if not pages else [])
            if len(blocks) > 1:
                lines.append(f"columns, part {b_i + 1} of {len(blocks)}")
            for text in lines:
                fig.text(MARGIN / PAGE[0], y / PAGE[1], text, fontsize=8.5, va="top", color="0.25")
                y -= 0.17 * (text.count("\n") + 1) + 0.05
            y -= 0.1
            start = _draw(fig, y, cells, heights, failed, cols, widths, top, sub, num, size, start)
            pages.append(fig)
            if start >= len(cells):
                break
    return pages


def _draw(fig, y, cells, heights, failed, cols, widths, top, sub, num, size, start) -> int:
    """Draw header and as many rows from ``start`` as fit below ``y``; return the next row index."""
    W, H = PAGE
    x0 = MARGIN
    xs = np.concatenate([[x0], x0 + np.cumsum([widths[j] for j in cols])])
    line_h = size / 72.0 * 1.45
    right = xs[-1]
    if any(top[j] for j in cols):
        k = 0
        while k < len(cols):
            end = k
            while end + 1 < len(cols) and top[cols[end + 1]] == top[cols[k]]:
                end += 1
            if top[cols[k]]:
                fig.text((xs[k] + xs[end + 1]) / 2 / W, y / H, top[cols[k]], fontsize=size, weight="bold",
                         ha="center", va="top")
                fig.add_artist(_hline(xs[k] + 0.04, xs[end + 1] - 0.04, y - line_h * 1.05, 0.5))
            k = end + 1
        y -= line_h * 1.2
    fig.add_artist(_hline(x0, right, y + 0.03, 1.0))
    for k, j in enumerate(cols):
        fig.text((xs[k + 1] - 0.04 if num[j] else xs[k] + 0.04) / W, (y - 0.02) / H, sub[j], fontsize=size,
                 weight="bold", ha="right" if num[j] else "left", va="top")
    y -= line_h * 1.25
    fig.add_artist(_hline(x0, right, y, 0.6))
    i = start
    while i < len(cells) and (y - heights[i] > MARGIN or i == start):
        if failed[i]:
            fig.add_artist(Rectangle((x0 / W, (y - heights[i]) / H), (right - x0) / W, heights[i] / H,
                                     transform=fig.transFigure, color="#fde8e8", zorder=0, lw=0))
        for k, j in enumerate(cols):
            fig.text((xs[k + 1] - 0.04 if num[j] else xs[k] + 0.04) / W, (y - line_h * 0.2) / H, cells[i][j],
                     fontsize=size, ha="right" if num[j] else "left", va="top", linespacing=1.3,
                     color="#9b1c1c" if failed[i] else "black")
        y -= heights[i]
        i += 1
    fig.add_artist(_hline(x0, right, y, 1.0))
    return i


def _hline(x1: float, x2: float, y: float, lw: float):
    from matplotlib.lines import Line2D

    return Line2D([x1 / PAGE[0], x2 / PAGE[0]], [y / PAGE[1], y / PAGE[1]], lw=lw, color="black")
