"""``sbn-bench list [estimators|problems|noises|losses]``: what the suite offers, with declarations."""

from __future__ import annotations

import argparse
import dataclasses

from estimators import registry
from estimators.options import describe
from estimators.model.losses import LOSSES
from estimators.model.noise import NOISES
from reference.problems import NAMED_PROBLEMS, build_problem

KINDS = ("estimators", "problems", "noises", "losses")


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list estimators (with their declarations), problems, noises or losses")
    p.add_argument("kind", nargs="?", default="estimators", choices=KINDS)
    p.add_argument("--estimators", nargs="+", metavar="PLUGIN", default=(),
                   help="also load these plugins first: package.module:Class or path/file.py:Class")
    p.set_defaults(func=run)


def _estimators() -> list[str]:
    """Each estimator's declarations (read from its default instance), options with their domains,
    cost on the 2-5-5-5 network and origin (built-in, distribution and version, or file and hash)."""
    probe = build_problem("psa-2-5-5-5")
    lines = []
    for name, cls in registry.classes().items():
        est = cls()
        d = est.declarations()
        cost = est.cost(probe)
        opts = "; ".join(describe(f) for f in dataclasses.fields(cls)) or "-"
        lines.append(
            f"{name:<18} {'unbiased' if d['unbiased'] else 'biased':<9} paths/draw={d['paths_per_draw']:<3} "
            f"path-deterministic={'yes' if d['path_deterministic'] else 'no':<4} "
            f"from-path={'yes' if d['has_from_path'] else 'no':<4} "
            f"encodings={'/'.join(d['encodings'])} noises={'/'.join(d['noises'])}\n"
            f"{'':<18} {cls.summary}\n"
            f"{'':<18} options: {opts}\n"
            f"{'':<18} cost per draw on 2-5-5-5: {cost.layer_evals:g} layer evals, "
            f"{cost.head_evals:g} head evals, {cost.backward_passes:g} backward passes\n"
            f"{'':<18} from: {registry.origin(name).describe()}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    if args.kind == "estimators":
        for ref in args.estimators:
            registry.resolve(ref)  # loads it (one error line for a broken plugin)
        lines = _estimators()
    elif args.kind == "problems":
        lines = [f"{name:<14} {doc}" for name, (_, doc) in NAMED_PROBLEMS.items()] + ["FILE.npz       a problem file (see README)"]
    elif args.kind == "noises":
        lines = list(NOISES)
    else:
        lines = list(LOSSES)
    print("\n".join(lines))
    return 0
