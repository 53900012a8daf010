"""``sbn-bench time --gpu-suite``: the one prepared check for a lent GPU machine (under 5 minutes).

1. the CUDA correctness tests: ``pytest -m gpu`` on the repository's ``tests/`` (where present),
   with a time limit, so the Triton / compiled kernels are checked against the reference first;
2. the CUDA timing table: peaks, sampling, estimator draws, PSA's FC backward against a dense
   GEMM at widths 1024 and 4096 (with % of the reciprocal limit), its extra memory, the exact
   reference, PSA's conv backward per CIFAR_S1 layer and CIFAR_S1 draws (:mod:`bench.timing_conv`) —
   stored in the results database like any ``sbn-bench time`` run;
3. the table as Markdown (for the README) and the targets.

Exit code 1 when the CUDA tests fail, 2 without a CUDA device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from estimators.errors import InputError

__all__ = ["run_gpu_suite", "GPU_SUITE"]

#: the timing part's settings (flags given on the command line override them).
GPU_SUITE = dict(device="cuda", widths=(1024, 4096), batch=256, net="256-1024-1024-1024-1024",
                 mem_widths=(2048,), psa_variants=("eager", "fused", "cuda", "reference"),
                 min_run_time=0.3, rounds=2, max_single_s=2.0,
                 kernels=("peaks", "sampling", "draw", "psa-fc", "psa-fc-mem", "exact", "psa-conv", "draw-conv"))
TEST_LIMIT_S = 150


def _tests_dir() -> str | None:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(here, "tests")
    return path if os.path.isdir(path) else None


def _run_tests() -> tuple[int | None, str]:
    tests = _tests_dir()
    if tests is None:
        return None, "no tests/ folder next to the installed package (run from a checkout); CUDA tests skipped"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", tests]
    try:
        proc = subprocess.run(cmd, cwd=os.path.dirname(tests), timeout=TEST_LIMIT_S, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return 1, f"CUDA tests exceeded {TEST_LIMIT_S} s"
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    return proc.returncode, tail


def run_gpu_suite(args) -> int:
    import torch

    from bench.commands.time import _print, build_config, time_and_store

    if not torch.cuda.is_available():
        raise InputError("--gpu-suite needs a CUDA device (torch.cuda.is_available() is false)")
    t0 = time.perf_counter()
    rc, tail = _run_tests()
    print(f"== CUDA tests ({time.perf_counter() - t0:.0f} s): "
          f"{'skipped' if rc is None else ('passed' if rc in (0, 5) else f'FAILED (exit {rc})')}")
    print(tail)
    given = {k: v for k, v in vars(build_config(args)).items()}
    defaults = vars(build_config(argparse_defaults(args)))
    override = {k: v for k, v in GPU_SUITE.items() if given.get(k) == defaults.get(k)}
    cfg = build_config(args, **override)
    t1 = time.perf_counter()
    run_id, rows, targets, notes = time_and_store(cfg, args)
    args.markdown = True
    print(f"\n== CUDA timing table ({time.perf_counter() - t1:.0f} s, {torch.cuda.get_device_name(cfg.device)})\n")
    _print(args, run_id, rows, targets, notes)
    print(f"\n== gpu suite total {time.perf_counter() - t0:.0f} s")
    return 1 if rc not in (None, 0, 5) else 0


def argparse_defaults(args):
    """A copy of ``args`` with every timing flag at its default (to see which flags the user gave)."""
    import argparse

    blank = argparse.Namespace(**vars(args))
    for key in ("kernels", "widths", "batch", "dtype", "net", "draws", "estimators", "mem_widths", "psa_variants",
                "exact_problem", "min_time", "rounds", "max_single", "clock", "seed"):
        setattr(blank, key, None)
    blank.device = "cpu"
    return blank
