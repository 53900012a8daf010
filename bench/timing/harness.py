"""The timing run: every selected timing suite, the targets, the manifest and the stored rows.

:func:`measure_all` runs the suites of :data:`SUITES` named by the configuration's ``kernels`` in
one :class:`~bench.timing.config.Context` (so peaks are measured once); :func:`time_and_store`
adds the targets' verdicts (:mod:`bench.timing.targets`), the manifest (thread counts, load, CUDA
metadata at start and end) and writes one timing run to the results store.  ``sbn-bench time`` and
the GPU suite (:mod:`bench.timing.gpu_suite`) are thin layers over these two functions.
"""

from __future__ import annotations

import datetime
import os
import secrets
import sys
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from bench.manifest import build_manifest
from bench.store import Store
from bench.timing import conv as tc
from bench.timing import kernels as tk
from bench.timing import psa as tp
from bench.timing.config import Context, TimeConfig
from bench.timing.peaks import cuda_metadata
from bench.timing.targets import evaluate_targets
from estimators import inputs
from estimators.errors import InputError

__all__ = ["SUITES", "TimingRun", "measure_all", "time_and_store"]

#: timing suite name (``--kernels``) -> the function that measures it in a context
SUITES = {"peaks": tk.run_peaks, "sampling": tk.run_sampling, "draw": tk.run_draws, "psa-fc": tp.run_psa_fc,
          "psa-fc-mem": tp.run_psa_mem, "exact": tk.run_exact, "psa-conv": tc.run_psa_conv,
          "draw-conv": tc.run_draw_conv}


@dataclass
class TimingRun:
    """What one timing run produced: its id in the store (``None`` when not stored), rows, targets, notes."""

    run_id: str | None
    rows: list[dict]
    targets: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def measure_all(cfg: TimeConfig, progress: bool = True) -> tuple[list[dict], list[str], Context]:
    """Rows of every suite in ``cfg.kernels`` (peak rows first), the context's notes, and the context."""
    ctx = Context.create(cfg)
    rows: list[dict] = []
    for kernel in tqdm(cfg.kernels, desc="timing", file=sys.stderr, disable=None if progress else True):
        rows.extend(SUITES[kernel](ctx))
    return ctx.peak_rows + rows, ctx.notes, ctx


def _manifest(cfg: TimeConfig, label: str, ctx: Context, targets, notes, meta_start, threads: int) -> dict:
    m = build_manifest(config=cfg.as_dict(), config_hash=cfg.hash(), root_seed=cfg.seed, device=cfg.device,
                       preset="time", label=label)
    m.update(kind="timing", threads=threads, peaks=ctx.peaks.as_dict(), targets=targets, notes=notes,
             interop_threads=torch.get_num_interop_threads(), loadavg=list(os.getloadavg()),
             tf32_matmul=torch.backends.cuda.matmul.allow_tf32, cudnn_tf32=torch.backends.cudnn.allow_tf32)
    if meta_start is not None:
        m.update(cuda=meta_start, cuda_end=cuda_metadata(cfg.device), driver=meta_start.get("driver"))
    return m


def time_and_store(cfg: TimeConfig, db: str | None, label: str = "", threads: int | None = None,
                   store: bool = True) -> TimingRun:
    """Measure ``cfg`` with ``threads`` torch threads (default: torch's), evaluate the targets and,
    unless ``store`` is false, write the run to ``db``.  Torch's thread count is restored afterwards."""
    meta_start = cuda_metadata(cfg.device) if cfg.device.startswith("cuda") else None
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(inputs.threads(threads))
    if cfg.clock == "cpu" and torch.get_num_threads() != 1:
        torch.set_num_threads(old_threads)
        raise InputError("--clock cpu measures process CPU time, which equals wall time only with --threads 1")
    used = torch.get_num_threads()
    try:
        rows, notes, ctx = measure_all(cfg)
    finally:
        torch.set_num_threads(old_threads)
    if not rows:  # every kernel asked for was skipped (over its budget, not available): nothing to report or store
        raise InputError("nothing was timed: " + ("; ".join(notes) if notes else "no kernel produced a timing"))
    targets = evaluate_targets(rows, cfg)
    run_id = None
    if store and db:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        run_id = f"time-{stamp}-{secrets.token_hex(3)}"
        with Store(db, create=True) as st:
            st.create_run(run_id, _manifest(cfg, label, ctx, targets, notes, meta_start, used), cfg.hash(), label, "time")
            st.add_timings(run_id, rows)
    return TimingRun(run_id, rows, targets, notes)
