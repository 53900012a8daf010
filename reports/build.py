"""``build_report``: stored runs in, ``report.html``, ``report.pdf`` and ``tables/*.{csv,md,tex}`` out.

Rendering reads only the stored tidy rows (no recomputation, no torch) and takes seconds: one
accuracy figure per problem (a panel per parameter group), one bias-variance and one Pareto figure
per run, one throughput chart when timings exist. Each figure is drawn once and shared by the HTML
and PDF writers. The same inputs give byte-identical files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import matplotlib
import matplotlib.style

from .document import Table, close_figures
from .export import write_table
from .html import generator, render_html
from .pdf import write_pdf
from .results import ReportError, RunResults, run_id, validate
from .sections import run_sections

__all__ = ["build_report", "FORMATS"]

FORMATS = ("html", "pdf")
# Rendering ignores the user's matplotlibrc and any rcParams changed by the caller: same inputs, same bytes.
_RC = {"svg.fonttype": "none", "pdf.fonttype": 42, "font.family": "DejaVu Sans", "axes.titlesize": "medium"}


def _titles(runs: list[RunResults]) -> tuple[str, str]:
    ids = [run_id(r) for r in runs]
    title = f"sbn-bench report: run {ids[0]}" if len(ids) == 1 else f"sbn-bench report: {len(ids)} runs"
    parts = []
    for r in runs:
        m = r.manifest
        bits = [f"run {run_id(r)}"] + [f"{k} {m[k]}" for k in ("label", "preset", "created_utc", "device_name")
                                       if m.get(k) not in (None, "")]
        parts.append(", ".join(bits))
    return title, "; ".join(parts)


def build_report(runs: list[RunResults], out_dir, formats=FORMATS, check=None) -> dict[str, Path]:
    """Render ``runs`` into ``out_dir``; returns ``{"html": path, "pdf": path, "tables": dir}`` (as requested).

    ``formats``: any of ``"html"``, ``"pdf"`` (a sequence or a comma string); ``()`` writes the tables only.
    Raises :class:`ReportError` for no runs, an empty or malformed run, or an unknown format; nothing is
    written then.  ``check``, if given, is called with the files to be written (relative to ``out_dir``)
    before any is: it raises to refuse them (the CLI refuses links, pipes and devices).
    """
    formats = tuple(f.strip() for f in formats.split(",")) if isinstance(formats, str) else tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ReportError(f"unknown report format {unknown[0]!r} (choose from {', '.join(FORMATS)})")
    if not runs:
        raise ReportError("no runs to report")
    runs = [validate(r) for r in runs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title, subtitle = _titles(runs)
    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        return _build(runs, out, formats, title, subtitle, check)


def _build(runs, out: Path, formats, title: str, subtitle: str, check=None) -> dict[str, Path]:
    sections = run_sections(runs)
    names = [f"tables/{b.name}{ext}" for sec in sections for b in sec.blocks if isinstance(b, Table)
             for ext in (".csv", ".md", ".tex")] + [f"report.{f}" for f in ("html", "pdf") if f in formats]
    stage = out / f".report-{os.getpid()}"  # written here whole, then moved into place: an interruption
    try:                                    # (Ctrl-C, an error) leaves the earlier report, not half of a new one
        if check is not None:
            check(names)
        stage.mkdir(parents=True, exist_ok=True)
        for sec in sections:
            for b in sec.blocks:
                if isinstance(b, Table):
                    write_table(b.frame, stage / "tables" / b.name, b.caption)
        if "html" in formats:
            (stage / "report.html").write_text(render_html(sections, title, subtitle), encoding="utf-8")
        if "pdf" in formats:
            write_pdf(sections, stage / "report.pdf", title, subtitle, generator())
        (out / "tables").mkdir(parents=True, exist_ok=True)
        for name in names:
            if (stage / name).exists():
                os.replace(stage / name, out / name)
    finally:
        close_figures(sections)
        shutil.rmtree(stage, ignore_errors=True)
    paths: dict[str, Path] = {"tables": out / "tables"}
    paths.update({f: out / f"report.{f}" for f in ("html", "pdf") if f in formats})
    return paths
