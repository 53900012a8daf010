"""``sbn-bench runs``: list the runs in the results store."""

from __future__ import annotations

import argparse

from bench.store import DEFAULT_DB, Store


def add_parser(sub) -> None:
    p = sub.add_parser("runs", help="list the runs in the results store")
    p.add_argument("--db", default=DEFAULT_DB, help="results database")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with Store(args.db) as store:
        df = store.runs()
    if df.empty:
        print(f"no runs in {args.db}")
    else:  # text from the store is printed escaped where it holds control characters (an edited store)
        print(df.map(lambda v: ascii(v)[1:-1] if isinstance(v, str) and not v.isprintable() else v).to_string(index=False))
    return 0
