"""``sbn-bench report RUN [RUN ...] --format html,pdf --out DIR [--db PATH]``: render stored runs.

Reads the runs from the results store (a run id, a unique prefix, or ``latest``) and renders them
with :func:`bench.rendering.render` — no recomputation, so it takes seconds. Bad input (an unknown run, an empty run, an unknown format)
is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse

from bench.rendering import DEFAULT_FORMATS, render
from bench.store import DEFAULT_DB


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="render stored runs as HTML / PDF plus CSV, Markdown and LaTeX tables")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run id, unique prefix, or 'latest' (several: one report)")
    p.add_argument("--format", default=DEFAULT_FORMATS, help="comma list of html, pdf (default: html,pdf)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: sbn-report/RUN_ID)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"results database (default: ./{DEFAULT_DB})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = render(args.db, args.runs, args.out, args.format)
    for kind, path in paths.items():
        print(f"report ({kind}): {path}")
    return 0
