"""``sbn-bench time``: kernel throughput with ``torch.utils.benchmark`` into the results store, and a table.

Kernels (``--kernels``): ``peaks`` (measured copy bandwidth, large GEMM, reciprocal rate),
``sampling``, ``draw`` (every estimator, ratio to a deterministic forward + backward), ``psa-fc``
(PSA's FC backward against a dense GEMM), ``psa-fc-mem`` (its extra peak memory against ST's) and
``exact`` (transfer matrix against brute force).  ``--gpu-suite`` runs the CUDA tests and a CUDA
timing table in one command (for a lent GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from bench.store import DEFAULT_DB, Store
from bench.timing.config import KERNELS, PSA_VARIANTS, TimeConfig
from bench.timing.gpu_suite import require_cuda, run_gpu_suite, suite_overrides
from bench.timing.harness import TimingRun, time_and_store
from bench.timing.targets import format_table, format_targets
from estimators.inputs import comma_items, int_list
from estimators.spec import split_list as split_estimators


def add_parser(sub) -> None:
    p = sub.add_parser("time", help="time kernels (sampling, estimator draws, PSA's FC backward, exact reference)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default: cpu)")
    p.add_argument("--kernels", metavar="LIST",
                   help=f"comma list of {', '.join(KERNELS)} (default: all but the conv ones, psa-conv and draw-conv)")
    p.add_argument("--widths", metavar="W,W,...", help="square FC layer widths for psa-fc (default: 512,1024)")
    p.add_argument("--batch", type=int, help="data points per call (default: 256)")
    p.add_argument("--dtype", choices=("float32", "float64"), help="default: float32")
    p.add_argument("--net", metavar="n0-n1-..", help="network of sampling/draw (default: 256-512-512-512-512)")
    p.add_argument("--draws", type=int, help="draws per call (default: 1)")
    p.add_argument("--estimators", metavar="LIST", help="estimators for draw, options after a colon; * = all")
    p.add_argument("--mem-widths", metavar="W,...", help="widths for psa-fc-mem (default: 2048)")
    p.add_argument("--psa-variants", metavar="LIST", help=f"of {', '.join(PSA_VARIANTS)} (default: eager,fused,cuda,reference)")
    p.add_argument("--exact-problem", metavar="SPEC", help="problem for exact (default: random:widths=2-5-5-5,points=64)")
    p.add_argument("--min-time", type=float, help="seconds of timed runs per function (default: 0.5)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per comparison (default: 3)")
    p.add_argument("--max-single", type=float, help="time a function once when its first call exceeds this (s; default 10)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"),
                   help="wall (default) or cpu: process CPU time, for --threads 1 on a shared machine")
    p.add_argument("--conv-net", metavar="SPEC", help="conv network of psa-conv/draw-conv (default: cifar-s1)")
    p.add_argument("--conv-batch", type=int, help="data points per call for psa-conv (default: 16)")
    p.add_argument("--conv-draw-batch", type=int, help="data points per draw for draw-conv (default: 64)")
    p.add_argument("--seed", type=int)
    p.add_argument("--db", default=None, help=f"results database (default: ./{DEFAULT_DB})")
    p.add_argument("--no-store", action="store_true", help="print only; write nothing to the database")
    p.add_argument("--label", default=None, help="free-text label stored with the run")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print rows and targets as JSON instead of the table")
    out.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--gpu-suite", action="store_true", help="CUDA tests + CUDA timing table (needs a GPU; under 5 min)")
    p.set_defaults(func=run)


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    return int_list(text, flag)  # plain ASCII digits (not 1_6, ١٦), no empty item (`8,`, `8,,16`)


def _words(text: str | None, flag: str) -> tuple[str, ...] | None:
    return None if text is None else tuple(comma_items(text, flag))


_TIMING_FLAGS = ("kernels", "widths", "batch", "dtype", "net", "draws", "estimators", "mem_widths", "psa_variants",
                 "exact_problem", "min_time", "rounds", "max_single", "clock", "seed")


def build_config(args: argparse.Namespace, **override) -> TimeConfig:
    flags = dict(device=args.device, kernels=_words(args.kernels, "--kernels"), widths=_ints(args.widths, "--widths"),
                 batch=args.batch, dtype=args.dtype, net=args.net, draws=args.draws,
                 estimators=tuple(split_estimators(args.estimators)) if args.estimators is not None else None,
                 mem_widths=_ints(args.mem_widths, "--mem-widths"), psa_variants=_words(args.psa_variants, "--psa-variants"),
                 exact_problem=args.exact_problem, min_run_time=args.min_time, rounds=args.rounds,
                 max_single_s=args.max_single, clock=args.clock, seed=args.seed,
                 conv_net=args.conv_net, conv_batch=args.conv_batch, conv_draw_batch=args.conv_draw_batch)
    flags.update(override)
    return TimeConfig(**{k: v for k, v in flags.items() if v is not None})


def _defaults_of(args: argparse.Namespace) -> argparse.Namespace:
    """A copy of ``args`` with every timing flag at its default (to see which flags the user gave)."""
    blank = argparse.Namespace(**vars(args))
    for key in _TIMING_FLAGS:
        setattr(blank, key, None)
    blank.device = "cpu"
    return blank


def _no_nan(obj):
    """NaN (e.g. the IQR of a single run) -> null, so the output is strict JSON."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def _print(args, result: TimingRun) -> None:
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        out = {"run_id": result.run_id, "rows": result.rows, "targets": result.targets, "notes": result.notes}
        print(json.dumps(_no_nan(out), default=str, allow_nan=False))
        return
    print(format_table(result.rows, markdown=args.markdown))
    if result.targets:
        print()
        print(format_targets(result.targets))
    if result.run_id:
        print(f"\nrun {result.run_id}: {len(result.rows)} timing rows -> {args.db}")


def _gpu_suite(args: argparse.Namespace) -> int:
    require_cuda()
    given, defaults = vars(build_config(args)), vars(build_config(_defaults_of(args)))
    cfg = build_config(args, **suite_overrides(given, defaults))
    res = run_gpu_suite(cfg, args.db, args.label, args.threads, store=not args.no_store)
    state = "skipped" if res.tests_rc is None else ("FAILED (exit %d)" % res.tests_rc if res.failed else "passed")
    print(f"== CUDA tests ({res.tests_s:.0f} s): {state}")
    print(res.tests_tail)
    args.markdown = True
    print(f"\n== CUDA timing table ({res.timing_s:.0f} s, {torch.cuda.get_device_name(cfg.device)})\n")
    _print(args, res.timing)
    print(f"\n== gpu suite total {res.tests_s + res.timing_s:.0f} s")
    return 1 if res.failed else 0


#: which kernels read each timing flag (a flag none of the chosen kernels reads is noted: it changes nothing)
_FLAG_KERNELS = {"widths": ("psa-fc",), "mem_widths": ("psa-fc-mem",),
                 "psa_variants": ("psa-fc", "psa-fc-mem", "psa-conv"), "net": ("sampling", "draw"),
                 "batch": ("sampling", "draw", "psa-fc", "psa-fc-mem"), "draws": ("sampling", "draw", "psa-fc", "psa-fc-mem"),
                 "estimators": ("draw",), "exact_problem": ("exact",), "conv_net": ("psa-conv", "draw-conv"),
                 "conv_batch": ("psa-conv",), "conv_draw_batch": ("draw-conv",)}


def flags_without_effect(args: argparse.Namespace, cfg: TimeConfig) -> list[str]:
    """Notes on flags that change nothing: one that no chosen kernel reads, --db or --label with --no-store
    (a script may pass one set of sizes to several selections of kernels, so these are notes, not errors)."""
    notes = []
    for key, kernels in _FLAG_KERNELS.items():
        if getattr(args, key) is not None and not set(kernels) & set(cfg.kernels):
            notes.append(f"--{key.replace('_', '-')} has no effect: it sizes the kernel(s) {', '.join(kernels)}, "
                         f"none of which is timed")
    for flag, value in (("--db", args.db), ("--label", args.label)):
        if args.no_store and value is not None:
            notes.append(f"{flag} has no effect: --no-store writes nothing")
    return notes


def run(args: argparse.Namespace) -> int:
    if args.gpu_suite:
        args.db, args.label = args.db or DEFAULT_DB, args.label or ""
        return _gpu_suite(args)
    cfg = build_config(args)  # bad input raises before anything is measured or written
    for note in flags_without_effect(args, cfg):
        print(f"note: {note}", file=sys.stderr)
    args.db, args.label = args.db or DEFAULT_DB, args.label or ""
    if args.db and not args.no_store and os.path.exists(args.db):
        Store(args.db).close()  # refuse a corrupt / foreign database before measuring
    _print(args, time_and_store(cfg, args.db, args.label, args.threads, store=not args.no_store))
    return 0
