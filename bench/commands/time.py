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

from estimators.errors import InputError


def add_parser(sub) -> None:
    from bench.store import DEFAULT_DB
    from bench.timing_config import KERNELS, PSA_VARIANTS

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
    p.add_argument("--db", default=DEFAULT_DB, help=f"results database (default: ./{DEFAULT_DB})")
    p.add_argument("--no-store", action="store_true", help="print only; write nothing to the database")
    p.add_argument("--label", default="", help="free-text label stored with the run")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print rows and targets as JSON instead of the table")
    out.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--gpu-suite", action="store_true", help="CUDA tests + CUDA timing table (needs a GPU; under 5 min)")
    p.set_defaults(func=run)


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise InputError(f"{flag} {text!r} must be a comma list of integers") from None


def _words(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(t.strip() for t in text.split(",") if t.strip())


def build_config(args: argparse.Namespace, **override):
    from bench.commands.run import split_estimators
    from bench.timing_config import TimeConfig

    flags = dict(device=args.device, kernels=_words(args.kernels), widths=_ints(args.widths, "--widths"),
                 batch=args.batch, dtype=args.dtype, net=args.net, draws=args.draws,
                 estimators=tuple(split_estimators(args.estimators)) if args.estimators else None,
                 mem_widths=_ints(args.mem_widths, "--mem-widths"), psa_variants=_words(args.psa_variants),
                 exact_problem=args.exact_problem, min_run_time=args.min_time, rounds=args.rounds,
                 max_single_s=args.max_single, clock=args.clock, seed=args.seed,
                 conv_net=args.conv_net, conv_batch=args.conv_batch, conv_draw_batch=args.conv_draw_batch)
    flags.update(override)
    return TimeConfig(**{k: v for k, v in flags.items() if v is not None})


def measure_all(cfg, progress=True) -> tuple[list[dict], list[str], object]:
    from tqdm import tqdm

    from bench import timing_kernels as tk
    from bench import timing_psa as tp
    from bench.timing_config import Context

    from bench import timing_conv as tc

    suites = {"peaks": tk.run_peaks, "sampling": tk.run_sampling, "draw": tk.run_draws, "psa-fc": tp.run_psa_fc,
              "psa-fc-mem": tp.run_psa_mem, "exact": tk.run_exact, "psa-conv": tc.run_psa_conv,
              "draw-conv": tc.run_draw_conv}
    ctx = Context.create(cfg)
    rows: list[dict] = []
    for kernel in tqdm(cfg.kernels, desc="timing", file=sys.stderr, disable=None if progress else True):
        rows.extend(suites[kernel](ctx))
    return ctx.peak_rows + rows, ctx.notes, ctx


def _manifest(cfg, label: str, ctx, targets, notes, meta_start, threads: int) -> dict:
    import torch

    from bench.manifest import build_manifest
    from bench.peaks import cuda_metadata

    m = build_manifest(config=cfg.as_dict(), config_hash=cfg.hash(), root_seed=cfg.seed, device=cfg.device,
                       preset="time", label=label)
    m.update(kind="timing", threads=threads, peaks=ctx.peaks.as_dict(), targets=targets, notes=notes,
             interop_threads=torch.get_num_interop_threads(), loadavg=list(os.getloadavg()),
             tf32_matmul=torch.backends.cuda.matmul.allow_tf32, cudnn_tf32=torch.backends.cudnn.allow_tf32)
    if meta_start is not None:
        m.update(cuda=meta_start, cuda_end=cuda_metadata(cfg.device), driver=meta_start.get("driver"))
    return m


def time_and_store(cfg, args) -> tuple[str | None, list[dict], list[dict], list[str]]:
    import datetime
    import secrets

    import torch

    from bench.peaks import cuda_metadata
    from bench.store import Store
    from bench.timing_report import evaluate_targets

    meta_start = cuda_metadata(cfg.device) if cfg.device.startswith("cuda") else None
    old_threads = torch.get_num_threads()
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    if cfg.clock == "cpu" and torch.get_num_threads() != 1:
        torch.set_num_threads(old_threads)
        raise InputError("--clock cpu measures process CPU time, which equals wall time only with --threads 1")
    threads = torch.get_num_threads()
    try:
        rows, notes, ctx = measure_all(cfg)
    finally:
        torch.set_num_threads(old_threads)
    targets = evaluate_targets(rows, cfg)
    run_id = None
    if not args.no_store:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        run_id = f"time-{stamp}-{secrets.token_hex(3)}"
        with Store(args.db, create=True) as store:
            store.create_run(run_id, _manifest(cfg, args.label, ctx, targets, notes, meta_start, threads), cfg.hash(),
                             args.label, "time")
            store.add_timings(run_id, rows)
    return run_id, rows, targets, notes


def _no_nan(obj):
    """NaN (e.g. the IQR of a single run) -> null, so the output is strict JSON."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def _print(args, run_id, rows, targets, notes) -> None:
    from bench.timing_report import format_table, format_targets

    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        out = {"run_id": run_id, "rows": rows, "targets": targets, "notes": notes}
        print(json.dumps(_no_nan(out), default=str, allow_nan=False))
        return
    print(format_table(rows, markdown=args.markdown))
    if targets:
        print()
        print(format_targets(targets))
    if run_id:
        print(f"\nrun {run_id}: {len(rows)} timing rows -> {args.db}")


def run(args: argparse.Namespace) -> int:
    if args.gpu_suite:
        from bench.gpu_suite import run_gpu_suite

        return run_gpu_suite(args)
    cfg = build_config(args)  # bad input raises before anything is measured or written
    if args.db and not args.no_store and os.path.exists(args.db):
        from bench.store import Store

        Store(args.db).close()  # refuse a corrupt / foreign database before measuring
    run_id, rows, targets, notes = time_and_store(cfg, args)
    _print(args, run_id, rows, targets, notes)
    return 0
