r"""Measuring primitives of ``sbn-bench time``: warm-up, interleaved ``blocked_autorange``, peak memory.

Rules (``docs/timing.md``):

- every reported time comes from ``torch.utils.benchmark.Timer(...).blocked_autorange`` with
  ``num_threads = torch.get_num_threads()`` (the Timer's default of 1 would understate CPU
  throughput); its timer synchronises the accelerator at block boundaries, and we synchronise
  after the warm-up calls, so no host clock is read around unfinished GPU work;
- each function is called ``warmup`` times first (allocator growth, thread start, library
  handles, ``torch.compile``); the first call's time is kept as ``first_call_s`` (compile time);
- variants that are compared by a ratio are measured **interleaved** in several rounds (A B, B A,
  ...), and the per-run times of all rounds are pooled: median and IQR of the pool;
- a function whose first call takes longer than ``max_single_s`` is called once more, alone; if
  that warm call is still slower, it is the (``single``, no IQR) result, otherwise the function is
  timed normally (the first call was compilation);
- throughput is ``items / median``; extra peak memory is measured in a separate, untimed call
  (CUDA: ``max_memory_allocated``; CPU: the profiler's allocation events).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

__all__ = ["Timing", "sync", "measure", "measure_interleaved", "peak_extra_bytes", "row", "CLOCKS"]


def _wall() -> float:
    """torch.utils.benchmark's default timer: synchronises the accelerator, then reads the wall clock."""
    from torch.utils.benchmark.utils.timer import timer

    return timer()


#: ``wall`` (the default, synchronising) or ``cpu`` (process CPU time; CPU work only).
CLOCKS = {"wall": _wall, "cpu": time.process_time}


@dataclass(frozen=True)
class Timing:
    """Median and interquartile range (seconds per call) of a pooled set of per-run times."""

    median: float
    iqr: float
    runs: int
    first_call_s: float
    single: bool = False

    def rate(self, items: float) -> float:
        return items / self.median if self.median > 0 else float("nan")


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def _warm(fn: Callable[[], object], device: str, warmup: int) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        fn()
    sync(device)
    return first


def _single(fn: Callable[[], object], device: str, first: float, timer_fn: Callable[[], float]) -> Timing:
    sync(device)
    t0 = timer_fn()
    fn()
    sync(device)
    t = timer_fn() - t0
    return Timing(median=t, iqr=float("nan"), runs=1, first_call_s=first, single=True)


def _pooled(times: list[float], first: float) -> Timing:
    q1, med, q3 = np.percentile(np.asarray(times, dtype=float), [25, 50, 75])
    return Timing(median=float(med), iqr=float(q3 - q1), runs=len(times), first_call_s=first)


def measure_interleaved(fns: dict[str, Callable[[], object]], device: str = "cpu", min_run_time: float = 0.5,
                        rounds: int = 3, warmup: int = 2, max_single_s: float = 10.0,
                        clock: str = "wall") -> dict[str, Timing]:
    """Time several functions side by side: ``rounds`` alternating rounds, ``min_run_time`` per function in all.

    Returns a :class:`Timing` per name.  Functions slower than ``max_single_s`` on their first call
    are timed once, alone (``single``).  ``clock="cpu"`` (CPU only) reads the process's CPU time
    instead of the wall clock: on a shared machine it excludes the time the scheduler gave to other
    processes, and with one thread it equals the uncontended wall time.
    """
    from torch.utils.benchmark import Timer

    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}")
    if clock == "cpu" and str(device).startswith("cuda"):
        raise ValueError("the CPU-time clock cannot time CUDA work")
    timer_fn = CLOCKS[clock]

    firsts = {name: _warm(fn, device, 1) for name, fn in fns.items()}
    out: dict[str, Timing] = {}
    fast: list[str] = []
    for name, fn in fns.items():
        if firsts[name] > max_single_s:  # maybe only the first call was slow (compilation): time a warm one
            warm = _single(fn, device, firsts[name], timer_fn)
            if warm.median > max_single_s:
                out[name] = warm
                continue
        for _ in range(max(0, warmup - 1)):
            fn()
        fast.append(name)
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fast}
    per_round = max(min_run_time / max(rounds, 1), 1e-3)
    threads = torch.get_num_threads()
    for r in range(max(rounds, 1)):
        for name in (fast if r % 2 == 0 else fast[::-1]):
            timer = Timer(stmt="fn()", globals={"fn": fns[name]}, num_threads=threads, label=name, timer=timer_fn)
            times[name].extend(timer.blocked_autorange(min_run_time=per_round).times)
    for name in fast:
        out[name] = _pooled(times[name], firsts[name])
    return {name: out[name] for name in fns}


def measure(fn: Callable[[], object], device: str = "cpu", min_run_time: float = 0.5, warmup: int = 2,
            max_single_s: float = 10.0, clock: str = "wall") -> Timing:
    """Time one function (warm-up, then ``blocked_autorange``)."""
    return measure_interleaved({"fn": fn}, device, min_run_time, rounds=1, warmup=warmup, max_single_s=max_single_s,
                               clock=clock)["fn"]


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (Kinetos's start/stop lines, written by C++) for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_extra_bytes(fn: Callable[[], object], device: str = "cpu") -> int | None:
    """Peak memory allocated during one call of ``fn`` above what was allocated before it (bytes).

    CUDA: ``torch.cuda.max_memory_allocated``.  CPU: the running sum of the profiler's allocation
    and free events, in time order (all threads); ``None`` where neither is available.
    """
    if str(device).startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return int(peak)
    try:
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
            del out
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except Exception:  # noqa: BLE001 - a torch build without the Kineto profiler
        return None
    events.sort(key=lambda e: e.start_ns())
    level = peak = 0
    for e in events:
        level += e.nbytes()
        peak = max(peak, level)
    return int(peak)


def row(kernel: str, variant: str, device: str, dtype: str, shape: str, unit: str, items: float | None,
        timing: Timing | None, ratio: float | None = None, ratio_to: str = "", pct_peak: float | None = None,
        peak_kind: str = "", **extra) -> dict:
    """A timings row for :meth:`bench.store.Store.add_timings` (``items`` per call; ``None`` for untimed rows)."""
    if timing is not None:
        extra.update(runs=timing.runs, first_call_s=timing.first_call_s, single=timing.single,
                     threads=torch.get_num_threads())
    return {
        "kernel": kernel, "variant": variant, "device": device, "dtype": dtype, "shape": shape, "unit": unit,
        "items_per_s": timing.rate(items) if timing is not None and items is not None else None,
        "median_s": timing.median if timing is not None else None,
        "iqr_s": timing.iqr if timing is not None else None,
        "ratio": ratio, "ratio_to": ratio_to, "pct_peak": pct_peak, "peak_kind": peak_kind,
        "extra": {k: v for k, v in extra.items() if v is not None},
    }
