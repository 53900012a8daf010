"""``sbn-bench run``: a sweep (preset, TOML config or flags) into the results store, then its report."""

from __future__ import annotations

import argparse
import os
import re
import sys

from bench.config import SWEEP_PRESET_EXECUTORS, SWEEP_PRESETS, SweepConfig, load_toml
from bench.executors import EXECUTORS
from bench.rendering import DEFAULT_FORMATS, check_report_flags, render
from bench.store import DEFAULT_DB
from bench.sweep import run_sweep
from estimators.errors import InputError
from estimators.inputs import int_list
from estimators.spec import split_list as split_estimators


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="score estimators against exact gradients (default: the quick preset), then report")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=sorted(SWEEP_PRESETS), help="a named sweep (default: quick)")
    src.add_argument("--config", metavar="FILE.toml", help="a sweep described in TOML (keys as SweepConfig)")
    p.add_argument("--problem", action="append", metavar="SPEC", help="problem spec (repeatable); replaces the preset's")
    p.add_argument("--problem-file", action="append", metavar="FILE.npz", help="a problem file (repeatable)")
    p.add_argument("--estimators", metavar="LIST", help="comma list, options after a colon: psa,concrete:tau=0.1,st; * = all")
    p.add_argument("--draws", "-N", type=int,
                   help="single-draw estimates per task (N), for every problem (a preset's per-problem draws go)")
    p.add_argument("--grid", metavar="M,M,...", help="sample sizes M to score (default: the PSA grid up to N)")
    p.add_argument("--chunk", type=int, help="draws per estimator call (default: sized from the problem)")
    p.add_argument("--seed", type=int, help="root seed of the run")
    p.add_argument("--device", help="cpu or cuda[:i]")
    p.add_argument("--dtype", choices=("float32", "float64"))
    p.add_argument("--exact-method", choices=("transfer", "brute"))
    p.add_argument("--memory-budget", type=float, metavar="GIB", help="exact-reference memory budget (GiB)")
    p.add_argument("--reference", choices=("auto", "exact", "mc"),
                   help="reference gradient: exact enumeration, Monte Carlo (mc), or auto (exact where it fits)")
    p.add_argument("--reference-draws", type=int, metavar="N",
                   help="Monte Carlo reference: draws per problem, shared by its estimators (default: N); like "
                        "--reference-seconds and --reference-precision, it applies to every problem")
    p.add_argument("--reference-seconds", type=float, metavar="SECONDS",
                   help="Monte Carlo reference: as many draws per problem as this much compute allows")
    p.add_argument("--reference-precision", type=float, metavar="FRACTION",
                   help="with --reference-seconds: stop a problem's reference early once its standard error is at "
                        "most this fraction of the gradient's norm in every group (by the pilot's figures)")
    p.add_argument("--name", help="run name (default: the preset's or config file's)")
    p.add_argument("--cost-time", type=float, metavar="SECONDS",
                   help="seconds of warm, repeated timing per task for its cost per draw (default 0.5; 0: off)")
    p.add_argument("--clock", choices=("wall", "cpu"),
                   help="clock of the cost per draw: wall (default) or cpu: process CPU time, with --threads 1")
    p.add_argument("--threads", type=int, help="torch threads while the cost is timed (default: the worker's)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"results database (default: ./{DEFAULT_DB})")
    p.add_argument("--executor", choices=EXECUTORS,
                   help="inprocess (default; psa2020 and scaling use 'process' with 2 workers), process, dask, dask-local")
    p.add_argument("--workers", type=int, help="workers for process / dask-local executors")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="Dask scheduler address (--executor dask)")
    p.add_argument("--label", default="", help="free-text label stored with the run")
    p.add_argument("--fresh", action="store_true", help="start a new run even if this config was run before")
    p.add_argument("--no-report", action="store_true", help="skip the report")
    p.add_argument("--report-dir", metavar="DIR", help="where the report goes (default: sbn-report/RUN_ID)")
    p.add_argument("--format", default=DEFAULT_FORMATS, help="report formats (default: html,pdf)")
    p.add_argument("--allow-large", action="store_true",
                   help="accept more than 10^9 draws per task, or over a day of estimated compute (refused by "
                        "default); the Monte Carlo reference stays at most 10^9 draws per problem")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    if args.config:
        base = load_toml(args.config)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.splitext(os.path.basename(args.config))[0]).strip(".-")
        base.setdefault("name", stem or "config")
        base.setdefault("problems", [])
        base.setdefault("estimators", ["*"])
        # the file's own values are checked as written, even those a flag replaces below (its cost_time = -1
        # was accepted when --cost-time was also given); problems are checked when the sweep is planned
        own = {k: v for k, v in base.items() if k != "grid" or "draws" in base}  # -N may lift a grid's M
        SweepConfig(**{**own, "problems": tuple(base["problems"]) or tuple(base.get("problem_budgets", ()))
                       or ("psa-2-5-5-5",),
                       "estimators": tuple(base["estimators"])})
    else:
        base = dict(SWEEP_PRESETS[args.preset or "quick"])
    problems = list(args.problem or []) + list(args.problem_file or [])
    for f in args.problem_file or []:
        if not f.endswith(".npz"):
            raise InputError(f"--problem-file {f!r} must be an .npz problem file")
    if problems:
        base["problems"] = problems
    budgets = {spec: dict(b) for spec, b in base.get("problem_budgets", {}).items() if spec in base["problems"]}
    if args.config and base["problems"] and len(budgets) < len(base.get("problem_budgets", {})):  # a preset's: silent
        gone = [spec for spec in base["problem_budgets"] if spec not in budgets]
        print(f"note: problem_budgets of {len(gone)} problem(s) not in this sweep have no effect (first: {gone[0]})",
              file=sys.stderr)
    if args.estimators is not None:  # an empty list is an error, never the preset's estimators
        base["estimators"] = split_estimators(args.estimators)
    if args.grid is not None:
        base["grid"] = list(int_list(args.grid, "--grid"))
    flags = dict(draws=args.draws, chunk=args.chunk, seed=args.seed, device=args.device, dtype=args.dtype,
                 exact_method=args.exact_method, memory_budget_gib=args.memory_budget, name=args.name,
                 reference=args.reference, cost_time=args.cost_time, cost_clock=args.clock,
                 cost_threads=args.threads)
    replaced = {"draws"} if args.draws is not None else set()  # budget keys a flag sets for every problem
    if args.reference_draws is not None or args.reference_seconds is not None:  # a flag replaces the preset's budget
        base.pop("reference_draws", None)
        base.pop("reference_seconds", None)
        replaced |= {"reference_draws", "reference_seconds"}
        if args.reference_draws is not None:  # a number of draws is exact: the preset's early end goes with it
            base.pop("reference_precision", None)
            replaced.add("reference_precision")
        flags.update(reference_draws=args.reference_draws, reference_seconds=args.reference_seconds)
    if args.reference_precision is not None:
        replaced.add("reference_precision")
    flags.update(reference_precision=args.reference_precision)
    base.update({k: v for k, v in flags.items() if v is not None})
    # problems' own budgets follow their problems (a replaced problem list keeps those still named), and a flag
    # sets its value for every problem: the preset's or file's per-problem value of that key goes
    budgets = {spec: {k: v for k, v in b.items() if k not in replaced} for spec, b in budgets.items()}
    base["problem_budgets"] = {spec: b for spec, b in budgets.items() if b}
    if args.draws is not None and "grid" in base and base["grid"] and args.grid is None:
        base["grid"] = [m for m in base["grid"] if m <= args.draws]
    try:
        return SweepConfig(**base)
    except TypeError as exc:
        raise InputError(f"bad sweep configuration: {exc}") from None


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    check_report_flags(args.no_report, args.report_dir, args.format, args.db)  # before the sweep runs or the store is made
    executor, workers = args.executor, args.workers
    if executor is None:
        executor, hinted = SWEEP_PRESET_EXECUTORS.get(args.preset or "", ("inprocess", None))
        workers = workers or hinted
    out = run_sweep(cfg, args.db, executor=executor, workers=workers, scheduler=args.scheduler,
                    label=args.label, fresh=args.fresh, allow_large=args.allow_large)
    for note in out.skipped:
        print(f"note: {note}", file=sys.stderr)
    print(f"run {out.run_id}: {out.total} tasks, {out.already_done} already stored, {out.ran} computed"
          f"{f', {out.failed} failed' if out.failed else ''}"
          f"{f', {out.elsewhere} computed by another run of this sweep' if out.elsewhere else ''} -> {args.db}")
    if out.superseded:
        print(f"note: {out.superseded} stored task(s) of this run were made by other estimator code or from other "
              f"problem content; they are kept in the store and left out of its results", file=sys.stderr)
    for line in out.errors[:5]:
        print(f"note: failed: {line}", file=sys.stderr)
    if len(out.errors) > 5:
        print(f"note: {len(out.errors) - 5} more failed tasks: see 'sbn-bench show' and the report", file=sys.stderr)
    if not args.no_report:
        out_dir = args.report_dir or f"sbn-report/{out.run_id}"
        for fmt, path in render(args.db, [out.run_id], out_dir, args.format).items():
            print(f"report ({fmt}): {path}")
    return 1 if out.failed else 0  # failed tasks are stored with their reason; the exit code says so
