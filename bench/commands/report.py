"""``sbn-bench report RUN [RUN ...] --format html,pdf --out DIR [--db PATH]``: render stored runs.

Reads the runs from the results store (a run id, a unique prefix, or ``latest``) and renders them
with :func:`reports.build_report` — no recomputation, so it takes seconds. ``sbn-bench run`` calls
:func:`render` at the end of a sweep. Bad input (an unknown run, an empty run, an unknown format)
is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from bench.store import DEFAULT_DB

    p = sub.add_parser("report", help="render stored runs as HTML / PDF plus CSV, Markdown and LaTeX tables")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run id, unique prefix, or 'latest' (several: one report)")
    p.add_argument("--format", default="html,pdf", help="comma list of html, pdf (default: html,pdf)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: sbn-report/RUN_ID)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"results database (default: ./{DEFAULT_DB})")
    p.set_defaults(func=run)


def parse_formats(text: str) -> tuple[str, ...]:
    """``"html,pdf"`` -> ``("html", "pdf")``; unknown or empty -> InputError."""
    from estimators.errors import InputError
    from reports import FORMATS

    formats = tuple(dict.fromkeys(f.strip().lower() for f in str(text).split(",") if f.strip()))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"unknown report format {(bad or [text])[0]!r} (choose from {', '.join(FORMATS)})")
    return formats


def render(db: str, refs: list[str], out_dir: str | None, formats: str = "html,pdf") -> dict[str, Path]:
    """Load ``refs`` from the store at ``db`` and build one report in ``out_dir``; returns the written paths.

    Report errors (an empty or malformed run) become :class:`InputError`, which the CLI prints as one line.
    """
    from bench.store import Store
    from estimators.errors import InputError
    from reports import ReportError, build_report

    fmts = parse_formats(formats)
    with Store(db) as store:
        runs = [store.load_run(ref) for ref in refs]
    out = out_dir or f"sbn-report/{runs[0].manifest.get('run_id', 'run')}"
    try:
        return build_report(runs, out, fmts)
    except ReportError as exc:
        raise InputError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    paths = render(args.db, args.runs, args.out, args.format)
    for kind, path in paths.items():
        print(f"report ({kind}): {path}")
    return 0
