"""Validate a third-party estimator, score it against PSA and ST on two problems, and build a report.

Run after ``pip install ./examples/sbn_example_estimator`` (which registers ``tempered-st``)::

    python examples/score_my_estimator.py --out my-report/

``--estimator`` names any other estimator, e.g. a file that is not installed:
``--estimator path/to/my_est.py:MyEstimator``.  Exit code 0 when the estimator passes the contract
checks and the report is written, 1 when a check fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys

from bench import api
from estimators.errors import InputError

PROBLEMS = ["psa-2-5-5-5", "random:widths=2-4-4-4,points=20,scale=1.5,seed=3"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--estimator", default="tempered-st:temperature=0.5", help="the estimator to try")
    ap.add_argument("--draws", type=int, default=2000, help="single-draw estimates per task")
    ap.add_argument("--out", default="my-report", help="folder for the results database and the report")
    args = ap.parse_args(argv)
    try:
        report = api.validate(args.estimator)
        print(report.table())
        if not report.passed:
            return 1
        os.makedirs(args.out, exist_ok=True)
        db = os.path.join(args.out, "results.sqlite")
        scores = api.score([args.estimator, "psa", "st"], PROBLEMS, draws=args.draws, store=db, name="my-estimator")
        one_draw = scores.query("metric == 'rel_rmse' and M == 1 and group != 'all'")
        table = one_draw.pivot_table(index=["problem", "group"], columns="estimator", values="value")
        print("one-draw relative RMSE (M = 1) per parameter group:")
        print(table.round(3).to_string())
        for kind, path in api.report("latest", db, os.path.join(args.out, "report"), ["html", "pdf"]).items():
            print(f"report ({kind}): {path}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
