"""Table output: number formatting, the HTML Styler, and CSV / Markdown / LaTeX files.

Numbers are shown with 3 significant digits (integers in 1e3..1e6 in full); a missing value is an
en dash. CSV keeps full precision and flattens two-level column headers to ``"top sub"``. Markdown
is written here (pandas' ``to_markdown`` needs ``tabulate``, which is not a dependency); LaTeX and
HTML come from the same pandas Styler. Rows whose status is ``failed: ...`` get the ``failed`` class.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["fmt_value", "flat_columns", "group_starts", "failed_rows", "numeric_columns", "html_table",
           "markdown_table", "latex_table", "write_table", "NA"]

NA = "–"
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--"}


def fmt_value(x) -> str:
    """Display text of one cell: 3 significant digits, integers in full, NaN/None as an en dash."""
    if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
        return NA
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if 1e3 <= abs(x) < 1e6:
            return f"{x:.0f}"
        return f"{x:.3g}"
    return str(x)


def flat_columns(df: pd.DataFrame) -> list[str]:
    """Column names as single strings (``("rel. RMSE, M=1", "layer0")`` -> ``"rel. RMSE, M=1 layer0"``)."""
    if isinstance(df.columns, pd.MultiIndex):
        return [" ".join(str(p) for p in c if str(p)) for c in df.columns]
    return [str(c) for c in df.columns]


def numeric_columns(df: pd.DataFrame) -> list[bool]:
    return [pd.api.types.is_numeric_dtype(df.iloc[:, i]) and not pd.api.types.is_bool_dtype(df.iloc[:, i])
            for i in range(df.shape[1])]


def failed_rows(df: pd.DataFrame) -> np.ndarray:
    flags = np.zeros(len(df), dtype=bool)
    for i, name in enumerate(flat_columns(df)):
        if name.split(" ")[-1] == "status":
            flags |= df.iloc[:, i].astype(str).str.startswith("failed").to_numpy()
    return flags


def group_starts(df: pd.DataFrame, sep: str | None) -> np.ndarray:
    """Rows where the value of column ``sep`` (flat name) changes: the first row of each group."""
    flags = np.zeros(len(df), dtype=bool)
    names = flat_columns(df)
    if sep is None or sep not in names or not len(df):
        return flags
    col = df.iloc[:, names.index(sep)].astype(str).to_numpy()
    flags[0] = True
    flags[1:] = col[1:] != col[:-1]
    return flags


def _text(df: pd.DataFrame) -> list[list[str]]:
    return [[fmt_value(v) for v in row] for row in df.itertuples(index=False, name=None)]


def html_table(df: pd.DataFrame, uuid: str, sep: str | None = None) -> str:
    """The table as HTML from a pandas Styler, with a fixed ``table_uuid`` so the markup is deterministic.

    Cells carry classes: ``num`` or ``txt`` (plus ``long`` over 40 characters), ``failed`` on failed
    rows, ``sep`` on the first row of each group of column ``sep``. The page writes the caption,
    outside the horizontally scrolling table.
    """
    num = numeric_columns(df)
    failed = failed_rows(df)
    starts = group_starts(df, sep)
    starts[:1] = False
    text = _text(df)
    classes = pd.DataFrame([[("num" if n else "txt long" if len(t) > 40 else "txt") + (" failed" if f else "")
                             + (" sep" if s else "") for n, t in zip(num, row)]
                            for f, s, row in zip(failed, starts, text)], index=df.index, columns=df.columns)
    styler = (df.style.format(fmt_value, escape="html").format_index(escape="html", axis=1).hide(axis="index")
              .set_td_classes(classes))
    return styler.to_html(table_uuid=uuid, cell_ids=False, table_attributes='class="tbl"')


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned, ``|`` escaped)."""
    def cell(s: str) -> str:
        return s.replace("|", r"\|").replace("\n", " ")

    head = [cell(c) for c in flat_columns(df)]
    rule = ["---:" if n else "---" for n in numeric_columns(df)]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in _text(df)]
    return "\n".join(lines) + "\n"


def latex_escape(s: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(s))


def latex_table(df: pd.DataFrame, caption: str) -> str:
    """A booktabs LaTeX table from the same Styler (cells and headers escaped)."""
    shown = df.copy()
    if isinstance(shown.columns, pd.MultiIndex):
        shown.columns = pd.MultiIndex.from_tuples([tuple(latex_escape(p) for p in c) for c in shown.columns])
    else:
        shown.columns = [latex_escape(c) for c in shown.columns]
    styler = shown.style.format(lambda v: latex_escape(fmt_value(v))).hide(axis="index")
    return styler.to_latex(hrules=True, multicol_align="c", caption=latex_escape(caption),
                           column_format="".join("r" if n else "l" for n in numeric_columns(df)))


def write_table(df: pd.DataFrame, base: Path, caption: str) -> list[Path]:
    """Write ``base.csv`` (full precision), ``base.md`` and ``base.tex``; return the paths."""
    base.parent.mkdir(parents=True, exist_ok=True)
    flat = df.copy()
    flat.columns = flat_columns(df)
    # appended, never with_suffix: a stem such as "..._scale_1.5_ranking" keeps its dots
    paths = [base.with_name(base.name + ext) for ext in (".csv", ".md", ".tex")]
    flat.to_csv(paths[0], index=False, lineterminator="\n")
    paths[1].write_text(f"**{caption}**\n\n" + markdown_table(df), encoding="utf-8")
    paths[2].write_text(latex_table(df, caption), encoding="utf-8")
    return paths
