"""``sbn-bench check``: the CI regression gate (design: :mod:`bench.gate.design`).

Runs every registered estimator (or ``--estimators``) and the design's non-default code paths
(the compiled PSA kernels) on the gate's seeded problems, checks declared-unbiased groups against
the exact gradient and the other groups' mean vectors against the baseline ($z$-tests with
asserted power), every group's trace variance against the baseline, prints one line per check and
returns 0 when all hold, 1 on a regression, 2 on bad input (a baseline made from a dirty tree
included, unless ``--allow-dirty-baseline``).  ``--update-baseline`` rewrites the baseline (with
the run manifest) after the baseline-free checks pass.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict

from bench.gate.baseline import DEFAULT_BASELINE, check_replaceable, load_baseline, write_baseline
from bench.gate.design import DESIGN, evaluate, failures
from bench.gate.measure import run_suite
from bench.manifest import build_manifest
from bench.rendering import check_out_file, write_file
from estimators import registry
from estimators.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="CI regression gate: seeded run vs exact gradients and the committed baseline")
    p.add_argument("--baseline", metavar="FILE", default=None,
                   help="baseline JSON (default: the packaged bench/gate/baselines/ci.json)")
    p.add_argument("--update-baseline", action="store_true",
                   help="rewrite the baseline from this run (only if the exact-gradient checks pass)")
    p.add_argument("--estimators", nargs="+", metavar="SPEC", default=None,
                   help="restrict to these estimator specs (default: every registered estimator)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write every check and measurement to FILE")
    p.add_argument("--failures-only", action="store_true", help="print only failing checks and the summary")
    p.add_argument("--allow-dirty-baseline", action="store_true",
                   help="accept a baseline whose manifest says it was made from a tree with uncommitted changes")
    p.set_defaults(func=run)


def _num(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def format_table(checks, problems: list[str], failures_only: bool = False) -> str:
    """The check table: one line per check, problems abbreviated ``p1, p2, ...`` (legend first)."""
    label = {spec: f"p{i + 1}" for i, spec in enumerate(problems)}
    lines = [f"  {label[s]} = {s}" for s in problems]
    head = ("prob", "estimator", "group", "check", "estimate", "reference", "SE", "limit", "verdict")
    rows = []
    for c in checks:
        if failures_only and c.passed is not False:
            continue
        verdict = "ok" if c.passed else ("info" if c.passed is None else "FAIL")
        rows.append((label.get(c.problem, c.problem), c.estimator, c.group, c.check, _num(c.estimate),
                     _num(c.reference), _num(c.se), _num(c.limit), verdict, c.note))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 4 else '>'}{w}}}" for i, w in enumerate(widths))
    lines.append(fmt.format(*head))
    for r in rows:
        note = r[9] if r[8] == "FAIL" else ""
        lines.append(fmt.format(*r[:9]) + (f"  {note}" if note else ""))
    return "\n".join(lines)


def _estimators(specs, builtin_only: bool):
    """The named estimators, or every registered one (only the built-in ones against the packaged
    baseline, which knows nothing of installed plugins: check those with --estimators and your own
    --baseline)."""
    if specs:
        return [registry.get(s) for s in dict.fromkeys(specs)]
    names = [n for n in registry.names() if not builtin_only or registry.origin(n).kind == "builtin"]
    paths = [s for _, s in DESIGN.paths if s.split(":")[0] in names]  # the non-default code paths
    return [registry.get(n) for n in dict.fromkeys(names + paths)]


def _in_source_checkout(path) -> bool:
    """Whether the packaged baseline ``path`` (``bench/gate/baselines/ci.json``) lies in a git checkout of
    sbn-bench, where regenerating it is a developer's change to review, not a write into an installed package."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path)))))
    return os.path.exists(os.path.join(root, ".git"))


def run(args: argparse.Namespace) -> int:
    design = DESIGN
    path = args.baseline or DEFAULT_BASELINE
    estimators = _estimators(args.estimators, builtin_only=args.baseline is None)  # bad names: InputError first
    if args.update_baseline:
        if args.baseline is None and not _in_source_checkout(path):
            raise InputError(f"--update-baseline without --baseline would rewrite the baseline packaged with this "
                             f"installed sbn-bench ({path}); give --baseline FILE for a baseline of your own")
        check_replaceable(path)  # a file that is not a baseline is never overwritten
    if args.json:  # checked now, not after minutes of measuring (a FIFO blocked, a folder failed late)
        if os.path.abspath(args.json) == os.path.abspath(path):
            raise InputError(f"--json {args.json!r} is the baseline file; name another file for the report")
        check_out_file(args.json, "check --json")
    baseline = None if args.update_baseline else load_baseline(path, design, args.allow_dirty_baseline)
    t0 = time.perf_counter()
    measurements, plan = run_suite(estimators, design)
    seconds = time.perf_counter() - t0
    checks = evaluate(measurements, baseline, plan, design)
    failed = failures(checks)
    print(f"sbn-bench check: {len(measurements)} (problem, estimator) runs in {seconds:.1f} s; Bonferroni family "
          f"m = {plan.m}, alpha = {design.alpha:g}: z_c = {plan.z_c:.3f}, z_v = {plan.z_v:.3f}; power 1-{design.beta:g} "
          f"at a relative bias (change) of {design.rel_delta:g}; variance margin {design.var_margin:.0%}")
    print(format_table(checks, list(dict.fromkeys(design.problems + tuple(p for p, _ in design.paths))),
                       args.failures_only))
    if args.json:
        _write_json(args.json, checks, measurements, plan, design, seconds)
    if args.update_baseline:
        if failed:
            print(f"{len(failed)} exact-gradient check(s) failed; baseline NOT written")
            return 1
        keep = None
        if args.estimators:
            try:
                keep = load_baseline(path, design, allow_dirty=True)
            except Exception:  # noqa: BLE001 - an unusable old baseline is simply replaced
                keep = None
        manifest = build_manifest(config=asdict(design), config_hash=design.digest(), root_seed=design.root_seed,
                                  device="cpu", label="ci-gate-baseline")
        out = write_baseline(path, measurements, plan, manifest, design, keep)
        print(f"baseline written to {out} ({len(measurements)} runs)")
        if manifest.get("git_dirty"):
            print("note: the tree has uncommitted changes, so the gate will refuse this baseline unless given "
                  "--allow-dirty-baseline; commit, then regenerate it")
        return 0
    stale = sorted(set(baseline) - {(m.problem, m.estimator) for m in measurements}) if args.estimators is None else []
    if stale:
        print("note: baseline entries without a registered estimator: "
              + ", ".join(sorted({e for _, e in stale})))
    print(f"{len(checks) - len(failed)} of {len(checks)} checks hold" + (f"; {len(failed)} FAILED" if failed else ""))
    return 1 if failed else 0


def _write_json(path, checks, measurements, plan, design, seconds) -> None:
    def clean(x):
        return None if isinstance(x, float) and not math.isfinite(x) else x

    data = {
        "design": asdict(design),
        "plan": asdict(plan),
        "seconds": seconds,
        "checks": [{k: clean(v) for k, v in asdict(c).items()} for c in checks],
        "measurements": [{"problem": m.problem, "estimator": m.estimator, "unbiased_groups": list(m.unbiased_groups), "n": m.n,
                          "seed": m.seed, "seconds": m.seconds,
                          "groups": {g: s.summary() for g, s in m.groups.items()}} for m in measurements],
    }
    write_file(path, json.dumps(data, indent=1, allow_nan=False))
