"""``sbn-bench exact --problem SPEC``: the exact expected loss and per-group gradient of a problem."""

from __future__ import annotations

import argparse
import json
import time

from estimators import inputs
from reference import build_problem, exact


def add_parser(sub) -> None:
    p = sub.add_parser("exact", help="exact expected loss and gradient (transfer matrix or brute force)")
    p.add_argument("--problem", required=True, help="problem spec (e.g. psa-2-5-5-5, random:widths=2-8-8) or FILE.npz")
    p.add_argument("--method", choices=("transfer", "brute"), default="transfer")
    p.add_argument("--memory-budget", type=float, default=4.0, metavar="GIB", help="refuse problems above this (GiB)")
    p.add_argument("--json", action="store_true", help="print the full gradient as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    budget = inputs.memory_budget(args.memory_budget)
    problem = build_problem(args.problem)
    t0 = time.perf_counter()
    ex = exact(problem, args.method, budget=int(budget * 2**30))
    seconds = time.perf_counter() - t0
    if args.json:
        out = {"problem": problem.name, "method": ex.method, "loss": ex.loss, "seconds": seconds,
               "grads": {k: v.tolist() for k, v in ex.grads.items()}}
        print(json.dumps(out, indent=1))
        return 0
    print(f"problem {problem.name}: widths {'-'.join(map(str, problem.widths))}, {problem.batch_size} points, "
          f"encoding {problem.encoding}, noise {problem.noise}, loss {problem.loss}")
    print(f"exact expected loss ({ex.method}, {seconds * 1e3:.1f} ms): {ex.loss:.12g}")
    for name, g in ex.grads.items():
        print(f"  {name:<8} size {g.numel():>5}  |grad| = {float(g.norm()):.6g}")
    return 0
