"""``sbn-bench time --gpu-suite``: the one prepared check for a lent GPU machine (under 5 minutes).

1. the CUDA correctness tests: ``pytest -m gpu`` on the repository's ``tests/`` (where present),
   with a time limit, so the Triton / compiled kernels are checked against the reference first;
2. the CUDA timing table: peaks, sampling, estimator draws, PSA's FC backward against a dense
   GEMM at widths 1024 and 4096 (with % of the reciprocal limit), its extra memory, the exact
   reference, PSA's conv backward per CIFAR_S1 layer and CIFAR_S1 draws (:mod:`bench.timing.conv`) —
   stored in the results database like any ``sbn-bench time`` run;
3. the table as Markdown (for the README) and the targets.

Exit code 1 when the CUDA tests fail, 2 without a CUDA device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from bench.timing.config import TimeConfig
from bench.timing.harness import TimingRun, time_and_store
from estimators.errors import InputError

__all__ = ["GPU_SUITE", "GpuSuiteResult", "require_cuda", "run_gpu_suite", "suite_overrides"]

#: the timing part's settings (flags given on the command line override them).
GPU_SUITE = dict(device="cuda", widths=(1024, 4096), batch=256, net="256-1024-1024-1024-1024",
                 mem_widths=(2048,), psa_variants=("eager", "fused", "cuda", "reference"),
                 min_run_time=0.3, rounds=2, max_single_s=2.0,
                 kernels=("peaks", "sampling", "draw", "psa-fc", "psa-fc-mem", "exact", "psa-conv", "draw-conv"))
TEST_LIMIT_S = 150


def _tests_dir() -> str | None:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


@dataclass
class GpuSuiteResult:
    """The CUDA tests' exit code (``None``: no tests folder) and output tail, and the timing run."""

    tests_rc: int | None
    tests_tail: str
    tests_s: float
    timing: TimingRun
    timing_s: float

    @property
    def failed(self) -> bool:
        return self.tests_rc not in (None, 0, 5)


def require_cuda() -> None:
    """One :class:`InputError` line where no CUDA device is visible."""
    if not torch.cuda.is_available():
        raise InputError("--gpu-suite needs a CUDA device (torch.cuda.is_available() is false)")


def suite_overrides(given: dict, defaults: dict) -> dict:
    """The :data:`GPU_SUITE` settings for every field the user left at its default (flags win)."""
    return {k: v for k, v in GPU_SUITE.items() if given.get(k) == defaults.get(k)}


def run_gpu_suite(cfg: TimeConfig, db: str | None, label: str = "", threads: int | None = None,
                  store: bool = True) -> GpuSuiteResult:
    """The CUDA tests, then the timing run of ``cfg`` (built with :func:`suite_overrides`) on CUDA."""
    require_cuda()
    t0 = time.perf_counter()
    rc, tail = _run_tests()
    t1 = time.perf_counter()
    timing = time_and_store(cfg, db, label, threads, store)
    return GpuSuiteResult(rc, tail, t1 - t0, timing, time.perf_counter() - t1)
