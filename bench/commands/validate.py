"""``sbn-bench validate SPEC [SPEC ...]``: put estimators through the contract (:mod:`bench.validate`).

Prints one verdict per check and exits 0 when every check holds, 1 when one fails, 2 on bad
input (an unknown estimator, a plugin that does not load).  Plugins are named as anywhere else:
``package.module:Class`` or ``path/file.py:Class``.
"""

from __future__ import annotations

import argparse

from bench.rendering import check_out_file, write_file
from bench.validate import check_estimator, check_names, report_json
from estimators import inputs, registry
from estimators.inputs import comma_items


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="check estimators against the contract (shapes, generators, support, "
                                        "path-determinism, unbiasedness, ...)")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="estimator spec, plugin ref, or * for every registered one")
    p.add_argument("--checks", metavar="LIST", help=f"comma list of {', '.join(check_names())} (default: all)")
    p.add_argument("--seed", type=int, default=0, help="root seed of the checks (default 0)")
    p.add_argument("--max-draws", type=int, default=2_000_000, help="draw budget of the unbiasedness check")
    p.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    checks = comma_items(args.checks, "--checks", unique=True) if args.checks is not None else None
    inputs.seed(args.seed, "--seed")
    inputs.positive_int(args.max_draws, "--max-draws", maximum=inputs.MAX_DRAWS)
    specs = [s for spec in args.specs for s in (registry.names() if spec.strip() == "*" else [spec])]
    estimators = [registry.get(s) for s in specs]  # bad input: one line, exit 2, before any check runs
    inputs.no_repeats([e.spec for e in estimators], "validate", "estimator")  # 'st st' ran st twice
    if args.json:  # a FIFO, a folder or a link there is refused now, not after the checks ran (a FIFO blocked)
        check_out_file(args.json, "validate --json")
    reports = [check_estimator(est, checks, seed=args.seed, max_draws=args.max_draws) for est in estimators]
    for rep in reports:
        print(rep.table())
    if args.json:
        write_file(args.json, report_json(reports))
    return 0 if all(r.passed for r in reports) else 1
