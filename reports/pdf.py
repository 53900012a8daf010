"""The multi-page PDF: a title page with contents, then the sections; tables and notes flow down A4
pages, each figure is a page of its own.

Written with ``PdfPages`` and ``metadata={"CreationDate": None}`` (no timestamp, so two builds of
the same results are byte-identical) and ``pdf.fonttype = 42`` (embedded TrueType: good glyphs and
extractable, searchable text). Each top-level section starts a new page; a table that fits on one
page is never split (it moves to the next page), a longer one starts where it is and continues
under a repeated header.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from .document import Plot, Section, Table, Text
from .pdf_table import MARGIN, PAGE, draw_rows, typeset

__all__ = ["write_pdf"]


class _Flow:
    """The current page and how far down it is filled (inches from the bottom)."""

    def __init__(self, pdf: PdfPages):
        self.pdf, self.fig, self.y = pdf, None, 0.0

    def flush(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            self.fig = None

    def need(self, height: float) -> None:
        if self.fig is None or self.y - height < MARGIN:
            self.flush()
            self.fig, self.y = Figure(figsize=PAGE), PAGE[1] - MARGIN

    def text(self, text: str, size: float, width: int = 150, gap: float = 0.06, **kw) -> None:
        text = "\n".join(textwrap.fill(t, width) if t else " " for t in text.split("\n"))
        h = (text.count("\n") + 1) * size / 72 * 1.4
        self.need(h + gap)
        self.fig.text(MARGIN / PAGE[0], self.y / PAGE[1], text, fontsize=size, va="top", linespacing=1.4, **kw)
        self.y -= h + gap

    def table(self, b: Table, heading: str) -> None:
        ts = typeset(b.frame, b.sep)
        for part, cols in enumerate(ts.blocks):
            cap = b.caption + (f" (columns, part {part + 1} of {len(ts.blocks)})" if len(ts.blocks) > 1 else "")
            whole = 0.45 + ts.head_h(cols) + sum(ts.row_h(i) for i in range(len(ts.cells)))
            if whole <= PAGE[1] - 2 * MARGIN:  # fits on a page: never split it, start a new page if needed
                self.need(whole)
            else:  # longer than a page: start here if the header and three rows fit
                self.need(0.45 + ts.head_h(cols) + sum(ts.row_h(i) for i in range(min(3, len(ts.cells)))))
            self.text(cap, 9, weight="bold", gap=0.04)
            start = 0
            while True:
                start, self.y = draw_rows(self.fig, self.y, ts, cols, start)
                self.y -= 0.25
                if start >= len(ts.cells):
                    break
                self.flush()
                self.need(0)
                self.text(f"{heading}: {b.caption} (continued)", 9, weight="bold", gap=0.04)

    def figure(self, fig: Figure) -> None:
        self.flush()
        self.pdf.savefig(fig)


def write_pdf(sections: list[Section], path: Path, title: str, subtitle: str, generator: str) -> Path:
    """Write the report PDF to ``path`` and return it."""
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        with PdfPages(path, metadata={"Title": title, "Subject": subtitle, "Creator": generator,
                                      "CreationDate": None, "ModDate": None}) as pdf:
            flow = _Flow(pdf)
            flow.text(title, 18, weight="bold", gap=0.15)
            flow.text(subtitle, 10, gap=0.25)
            flow.text("Contents", 11, weight="bold")
            for s in sections:
                flow.text(("      " if s.level > 2 else "") + s.title, 10, gap=0.0)
            flow.text(f"\n{generator}: rendered from stored results only.", 9, color="0.3")
            for sec in sections:
                if sec.level <= 2:
                    flow.flush()
                heading = sec.title  # drawn before the first text or table; a figure carries its own title
                for b in sec.blocks:
                    if isinstance(b, Plot):
                        fig = b.figure
                        if fig is not None:
                            flow.figure(fig)
                            heading = None
                            continue
                        b = Text(f"{b.caption}: nothing to plot.")
                    if isinstance(b, Table) and not b.show:
                        continue
                    if heading:
                        flow.need(1.2)
                        flow.text(heading, 15 if sec.level <= 2 else 13, weight="bold", gap=0.12)
                        heading = None
                    if isinstance(b, Text):
                        flow.text(b.text, 9.5, color="#9b1c1c" if b.kind == "warn" else "0.15")
                    else:
                        flow.table(b, sec.title)
            flow.flush()
    return path
