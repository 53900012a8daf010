"""Tables typeset as PDF pages: monospaced rows (one text object per printed line), booktabs rules.

A monospaced font makes the layout exact and cheap: column widths are character counts, each
printed line is one text object (drawing thousands of per-cell texts was the slow part), and
the text stays text (TrueType in the PDF), so it is searchable and extractable. The font shrinks
from 8 pt to 5.5 pt to fit the page width; a table still too wide is split into column blocks
that repeat the leading text columns. Long text cells wrap; rows paginate with the header
repeated; rows whose status is ``failed`` are shaded.
"""

from __future__ import annotations

import textwrap

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from .export import _failed_rows, _numeric, fmt_value

__all__ = ["table_pages", "PAGE", "MARGIN", "MONO"]

PAGE = (11.69, 8.27)  # A4 landscape, inches
MARGIN = 0.5
MONO = "DejaVu Sans Mono"  # ships with matplotlib; advance width 0.602 em for every glyph
_ADVANCE = 0.602
_SIZES = (8.0, 7.5, 7.0, 6.5, 6.0, 5.5)
_WRAP = 44
_GAP = 2  # spaces between columns


def _headers(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    if isinstance(df.columns, pd.MultiIndex):
        return [str(c[0]) for c in df.columns], [" ".join(str(p) for p in c[1:]) for c in df.columns]
    return [""] * df.shape[1], [str(c) for c in df.columns]


def _widths(top: list[str], sub: list[str], cells: list[list[list[str]]]) -> list[int]:
    """Characters per column; a spanning top label widens the last column of its span if needed."""
    w = [max([len(sub[j])] + [len(line) for r in cells for line in r[j]]) for j in range(len(sub))]
    j = 0
    while j < len(top):
        end = j
        while end + 1 < len(top) and top[end + 1] == top[j]:
            end += 1
        need = len(top[j]) - (sum(w[j:end + 1]) + _GAP * (end - j))
        if top[j] and need > 0:
            w[end] += need
        j = end + 1
    return w


def _blocks(w: list[int], lead: int, avail: int) -> list[list[int]]:
    """Column index blocks of at most ``avail`` characters, each starting with the ``lead`` text columns."""
    total = lambda cols: sum(w[c] for c in cols) + _GAP * (len(cols) - 1)  # noqa: E731
    if total(range(len(w))) <= avail:
        return [list(range(len(w)))]
    blocks, cur = [], list(range(lead))
    for j in range(lead, len(w)):
        if total(cur + [j]) > avail and len(cur) > lead:
            blocks.append(cur)
            cur = list(range(lead))
        cur.append(j)
    return blocks + [cur]


def _line(parts: list[str], w: list[int], cols: list[int], num: list[bool]) -> str:
    return (" " * _GAP).join(parts[k].rjust(w[j]) if num[j] else parts[k].ljust(w[j])
                             for k, j in enumerate(cols)).rstrip()


def _span_line(top: list[str], w: list[int], cols: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The spanning header line and the (start, end) character ranges to underline."""
    text, rules, pos, k = "", [], 0, 0
    while k < len(cols):
        end = k
        while end + 1 < len(cols) and top[cols[end + 1]] == top[cols[k]]:
            end += 1
        width = sum(w[cols[i]] for i in range(k, end + 1)) + _GAP * (end - k)
        label = top[cols[k]]
        text += label.center(width) + " " * _GAP
        if label:
            rules.append((pos, pos + width))
        pos += width + _GAP
        k = end + 1
    return text.rstrip(), rules


def table_pages(df: pd.DataFrame, title: str, caption: str, notes: list[str] = ()) -> list[Figure]:
    """The table as one or more A4-landscape pages (``notes`` on the first page only)."""
    top, sub = _headers(df)
    num = _numeric(df)
    failed = _failed_rows(df)
    cells = [[[fmt_value(v)] if n else (textwrap.wrap(fmt_value(v), _WRAP) or [""]) for v, n in zip(row, num)]
             for row in df.itertuples(index=False, name=None)]
    w = _widths(top, sub, cells)
    width_in = PAGE[0] - 2 * MARGIN
    for size in _SIZES:
        avail = int(width_in / (_ADVANCE * size / 72.0))
        if sum(w) + _GAP * (len(w) - 1) <= avail:
            break
    lead = next((j for j, n in enumerate(num) if n), len(num)) or 1
    blocks = _blocks(w, min(lead, 3), avail)
    pages: list[Figure] = []
    for b_i, cols in enumerate(blocks):
        start = 0
        while True:
            fig = Figure(figsize=PAGE)
            y = PAGE[1] - MARGIN
            fig.text(MARGIN / PAGE[0], y / PAGE[1], title + (" (continued)" if pages else ""), fontsize=12,
                     weight="bold", va="top")
            y -= 0.32
            lines = [caption] + (list(notes) if not pages else [])
            if len(blocks) > 1:
                lines.append(f"Columns, part {b_i + 1} of {len(blocks)}.")
            for text in filter(None, lines):
                text = textwrap.fill(text, 160)
                fig.text(MARGIN / PAGE[0], y / PAGE[1], text, fontsize=8.5, va="top", color="0.2")
                y -= 0.16 * (text.count("\n") + 1) + 0.06
            start = _draw(fig, y - 0.08, cells, failed, cols, w, top, sub, num, size, start)
            pages.append(fig)
            if start >= len(cells):
                break
    return pages


def _draw(fig, y, cells, failed, cols, w, top, sub, num, size, start) -> int:
    """Header and as many rows from ``start`` as fit below ``y`` (inches); returns the next row index."""
    W, H = PAGE
    char = _ADVANCE * size / 72.0
    lh = size * 1.32 / 72.0
    right = MARGIN + char * (sum(w[j] for j in cols) + _GAP * (len(cols) - 1))

    def put(text, y0, **kw):
        fig.text(MARGIN / W, y0 / H, text, fontsize=size, family=MONO, va="top", **kw)

    def rule(x1, x2, y0, lw):
        fig.add_artist(Line2D([x1 / W, x2 / W], [y0 / H, y0 / H], lw=lw, color="black"))

    rule(MARGIN, right, y, 1.0)
    y -= lh * 0.3
    if any(top[j] for j in cols):
        text, spans = _span_line(top, w, cols)
        put(text, y, weight="bold")
        for a, b in spans:
            rule(MARGIN + a * char + char * 0.3, MARGIN + b * char - char * 0.3, y - lh * 1.02, 0.5)
        y -= lh * 1.15
    put(_line([sub[j] for j in cols], w, cols, num), y, weight="bold")
    y -= lh * 1.1
    rule(MARGIN, right, y, 0.6)
    y -= lh * 0.25
    i = start
    while i < len(cells):
        n_lines = max(len(cells[i][j]) for j in cols)
        if y - n_lines * lh < MARGIN and i > start:
            break
        if failed[i]:
            fig.add_artist(Rectangle((MARGIN / W, (y - n_lines * lh) / H), (right - MARGIN) / W, n_lines * lh / H,
                                     transform=fig.transFigure, color="#fde8e8", zorder=0, lw=0))
        for k in range(n_lines):
            parts = [cells[i][j][k] if k < len(cells[i][j]) else "" for j in cols]
            put(_line(parts, w, cols, num), y - k * lh, color="#9b1c1c" if failed[i] else "black")
        y -= n_lines * lh
        i += 1
    rule(MARGIN, right, y - lh * 0.2, 1.0)
    return i
