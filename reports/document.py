"""The blocks a report is made of, independent of the output format: text, tables, figures, sections.

Section functions (:mod:`reports.sections`, :mod:`reports.training_curves`) build these; the HTML
and PDF writers only walk them.  Figures are built once, on first use, and shared by both writers;
:func:`close_figures` drops them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["Text", "Table", "Plot", "Section", "close_figures"]


@dataclass
class Text:
    text: str
    kind: str = "p"  # "p" or "warn"


@dataclass
class Table:
    name: str  # unique file stem, also the HTML table id
    caption: str
    frame: pd.DataFrame
    show: bool = True  # False: exported as CSV/Markdown/LaTeX only, not printed on the page
    sep: str | None = None  # a column whose changes start a new row group (a rule on the page)


@dataclass
class Plot:
    name: str
    caption: str
    make: Callable[[], Figure | None]
    _fig: list = field(default_factory=list, repr=False)

    @property
    def figure(self) -> Figure | None:
        if not self._fig:
            self._fig.append(self.make())
        return self._fig[0]


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list
    level: int = 2


def close_figures(sections: list[Section]) -> None:
    for sec in sections:
        for b in sec.blocks:
            if isinstance(b, Plot):
                b._fig.clear()
