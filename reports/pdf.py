"""The multi-page PDF: a title page with contents, then each section's tables and figures, one per page.

Written with ``PdfPages`` and ``metadata={"CreationDate": None}`` (no timestamp, so two builds of
the same results are byte-identical) and ``pdf.fonttype = 42`` (embedded TrueType: good glyphs
and extractable, searchable text). Text blocks of a section print as notes above its next table,
or on a page of their own when no table follows.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from .pdf_table import MARGIN, PAGE, table_pages
from .sections import Plot, Section, Table, Text

__all__ = ["write_pdf"]


def _text_page(title: str, lines: list[str], size: float = 10) -> Figure:
    fig = Figure(figsize=PAGE)
    y = PAGE[1] - MARGIN
    fig.text(MARGIN / PAGE[0], y / PAGE[1], title, fontsize=16, weight="bold", va="top")
    y -= 0.5
    for line in lines:
        text = textwrap.fill(line, 130) if line else " "
        fig.text(MARGIN / PAGE[0], y / PAGE[1], text, fontsize=size, va="top")
        y -= (text.count("\n") + 1) * size / 72 * 1.5 + 0.04
        if y < MARGIN:
            break
    return fig


def _section_pages(sec: Section):
    notes: list[str] = []
    for b in sec.blocks:
        if isinstance(b, Text):
            notes.append(b.text)
        elif isinstance(b, Table):
            if not b.show:
                continue
            yield from table_pages(b.frame, sec.title, b.caption, notes)
            notes = []
        elif isinstance(b, Plot):
            fig = b.figure
            if fig is None:
                notes.append(f"{b.caption}: nothing to plot.")
                continue
            yield fig
    if notes:
        yield _text_page(sec.title, notes)


def write_pdf(sections: list[Section], path: Path, title: str, subtitle: str, generator: str) -> Path:
    """Write the report PDF to ``path`` and return it."""
    contents = [("    " if s.level > 2 else "") + s.title for s in sections]
    with matplotlib.rc_context({"pdf.fonttype": 42, "pdf.compression": 6}):
        with PdfPages(path, metadata={"Title": title, "Subject": subtitle, "Creator": generator,
                                      "CreationDate": None, "ModDate": None}) as pdf:
            pdf.savefig(_text_page(title, [subtitle, "", "Contents:"] + contents +
                                   ["", f"{generator}: rendered from stored results only."]))
            for sec in sections:
                for fig in _section_pages(sec):
                    pdf.savefig(fig)
    return path
