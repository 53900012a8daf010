"""``sbn-bench problem SPEC [--save FILE.npz]``: describe a problem and optionally write it as a file."""

from __future__ import annotations

import argparse
import os
import sys

from bench.rendering import check_out_dir, check_out_files
from estimators.errors import InputError
from reference import build_problem, load_problem, save_problem


def add_parser(sub) -> None:
    p = sub.add_parser("problem", help="describe a problem; --save writes it in the .npz problem format")
    p.add_argument("spec", help="problem spec (e.g. psa-2-5-5-5:seed=1) or FILE.npz")
    p.add_argument("--save", metavar="FILE.npz", help="write the problem to this file")
    p.add_argument("--force", action="store_true", help="let --save replace an existing file")
    p.add_argument("--encoding", choices=("pm1", "01"), help="override the encoding of a problem file")
    p.add_argument("--noise", choices=("logistic", "gaussian", "uniform"), help="override the noise of a problem file")
    p.add_argument("--loss", choices=("logistic", "softmax", "squared"), help="override the loss of a problem file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.save and not args.save.endswith(".npz"):
        raise InputError(f"--save {args.save!r}: problem files are .npz archives (name it FILE.npz)")
    if args.save:  # the same checks as every output file: a writable folder, no link, pipe or folder in the way
        folder, name = os.path.split(args.save)
        if not os.path.isdir(folder or "."):
            raise InputError(f"--save {args.save!r}: folder {folder!r} does not exist")
        check_out_dir(folder or ".", "--save folder")
        check_out_files(folder or ".", [name], "problem --save")
    if args.save and os.path.lexists(args.save) and not args.force:
        raise InputError(f"--save {args.save!r} exists; pass --force to replace it")
    if args.force and not args.save:
        print("note: --force lets --save replace a file; without --save it has no effect", file=sys.stderr)
    overrides = {"encoding": args.encoding, "noise": args.noise, "loss": args.loss}
    if args.spec.endswith(".npz"):
        problem = load_problem(args.spec, **overrides)
    else:
        problem = build_problem(args.spec)
        changes = {k: v for k, v in overrides.items() if v}
        problem = problem.replace(**changes) if changes else problem
    print(f"{problem.name}: widths {'-'.join(map(str, problem.widths))}, {problem.batch_size} points, "
          f"{problem.n_out} head output(s), encoding {problem.encoding}, noise {problem.noise}, loss {problem.loss}")
    print("groups: " + ", ".join(f"{n} ({s})" for n, s in zip(problem.group_names, problem.group_sizes)))
    if args.save:
        save_problem(problem, args.save)
        print(f"saved to {args.save}")
    return 0
