"""``sbn-bench export RUN --format csv|json|parquet``: tidy tables of a run, written as files."""

from __future__ import annotations

import argparse
import contextlib
import json
import os

from bench.rendering import check_out_dir, check_out_files
from bench.store import DEFAULT_DB, RUN_KINDS, Store
from estimators.errors import InputError
from estimators.inputs import safe_name


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a run's tidy tables (those it holds of tasks, scores, curves, timings) and its manifest")
    p.add_argument("run_ref", metavar="RUN", help="run id, unique prefix, or 'latest'")
    p.add_argument("--format", choices=("csv", "json", "parquet"), default="csv")
    p.add_argument("--out", default=".", help="output directory (default: .)")
    p.add_argument("--db", default=DEFAULT_DB, help="results database")
    p.add_argument("--force", action="store_true", help="overwrite files of the same names")
    p.set_defaults(func=run)


@contextlib.contextmanager
def _aside(path: str):
    """A temporary name beside ``path`` to write; moved onto ``path`` when the block ends without error."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def run(args: argparse.Namespace) -> int:
    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError("--format parquet needs pyarrow: pip install 'sbn-bench[parquet]'") from None
    with Store(args.db) as store:
        run_id = store.resolve(args.run_ref, RUN_KINDS)
        manifest = store.manifest(run_id)
        tasks = store.tasks(run_id)
        tasks["facts"] = [json.dumps(f, sort_keys=True) for f in tasks["facts"]]  # measured facts as one JSON cell
        tables = {"tasks": tasks, "scores": store.scores(run_id), "curves": store.curves(run_id),
                  "timings": store.timings(run_id)}
    tables = {name: df for name, df in tables.items() if not df.empty}  # no empty files: what the run holds
    stem = safe_name(run_id, "run id")  # stored ids from older versions may not be file-safe: refuse them
    names = [f"{stem}.{name}.{args.format}" for name in tables] + [f"{stem}.manifest.json"]
    targets = [os.path.join(args.out, n) for n in names]
    check_out_dir(args.out, "--out")
    check_out_files(args.out, names, "export")
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not args.force:
        raise InputError(f"{existing[0]} exists; export refuses to overwrite (pass --force, or another --out)")
    os.makedirs(args.out, exist_ok=True)
    written = []
    for name, df in tables.items():
        path = os.path.join(args.out, f"{stem}.{name}.{args.format}")
        with _aside(path) as tmp:  # written whole beside it, then renamed: never into a file (or its hard links)
            if args.format == "csv":
                df.to_csv(tmp, index=False)
            elif args.format == "json":
                df.to_json(tmp, orient="records", indent=1)
            else:
                df.to_parquet(tmp, index=False)
        written.append(path)
    path = os.path.join(args.out, f"{stem}.manifest.json")
    with _aside(path) as tmp, open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1, default=str)
    written.append(path)
    print("\n".join(written))
    return 0
