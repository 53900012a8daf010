r"""Cost per draw measured like a benchmark: warm, repeated, with its clock and the machine's load.

The accuracy run's own clock (:mod:`bench.scoring`) includes ``torch.compile`` time and whatever
else the machine was doing, so each task measures its estimator's cost again, after scoring
(``docs/timing.md#cost-per-draw``):

1. **batch** — the accuracy run's draws per call, shrunk so that one call takes about
   ``time_s / 8``: sized from the accuracy run's seconds per draw, then corrected by up to
   ``1 + _SIZING_STEPS`` warm calls (a batch too small for the target at least doubles);
2. **warm-up** — never timed: the first call (compilation, allocator growth; kept as
   ``first_call_s``), the sizing calls, then ``1 + warmup`` calls of the final batch (a new batch
   size may compile again);
3. **repeats** — :func:`bench.timing.measure.measure_interleaved` (``blocked_autorange``) for
   ``time_s`` seconds in :data:`MIN_RUNS` rounds (at least one timed block each); the figure is the **median** seconds per draw, with the **IQR**, on the stated clock
   (``wall``: synchronising wall clock; ``cpu``: process CPU time, with one thread only);
4. **load** — the 1-minute load average before and after, the cores available to the process and
   the process's CPU/wall ratio during the repeats; the figure is **noisy** by :func:`noisy_reasons`.

``time_s = 0`` turns the measurement off: the task keeps the accuracy run's figure, marked noisy.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import torch

from estimators import inputs
from estimators.base import Estimator
from estimators.errors import InputError
from estimators.model import Problem

from .scoring import chunk_size
from .timing.measure import CLOCKS, measure_interleaved, sync

__all__ = ["CostSettings", "measure_cost", "timed_draws", "task_cost", "noisy_reasons", "with_cost", "cores_available",
           "MAX_REL_IQR", "MIN_RUNS", "MIN_CPU_WALL", "CALLS_PER_BUDGET"]

#: a figure is noisy when its IQR is more than this fraction of its median
MAX_REL_IQR = 0.1
#: ... or when fewer repeats than this were timed (an IQR of fewer is meaningless)
MIN_RUNS = 5
#: ... or, on the wall clock with one CPU thread, when the process ran less than this fraction of the time
MIN_CPU_WALL = 0.9
#: a timed call lasts about ``time_s / CALLS_PER_BUDGET``
CALLS_PER_BUDGET = 8
_SIZING_STEPS = 4  # at most this many more untimed calls to size the batch
_SEED_SALT = 0x5EED_C057  # the measurement's generator: apart from the accuracy run's stream


@dataclass(frozen=True)
class CostSettings:
    """How a task's cost is measured: ``time_s`` seconds of timed repeats (0: off) on ``clock``.

    ``threads``: torch intra-op threads while timing (``None``: the worker's count, 1 in process
    workers); ``warmup``: extra untimed calls of the final batch.
    """

    time_s: float = 0.5
    clock: str = "wall"
    threads: int | None = None
    warmup: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.time_s, bool) or not isinstance(self.time_s, (int, float)) \
                or not math.isfinite(self.time_s) or not 0 <= self.time_s <= 60:
            raise InputError(f"cost time must be a number of seconds from 0 to 60 per task, got {self.time_s!r}")
        if self.clock not in CLOCKS:
            raise InputError(f"unknown clock {self.clock!r}; choose one of {', '.join(CLOCKS)}")
        if self.threads is not None:
            inputs.threads(self.threads, "threads")
        if self.clock == "cpu" and self.threads != 1:
            raise InputError("--clock cpu measures process CPU time, which equals wall time only with --threads 1")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise InputError(f"warm-up calls must be an integer >= 0, got {self.warmup!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "CostSettings":
        return cls(**(d or {}))

    def as_dict(self) -> dict:
        return asdict(self)


def cores_available() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _load() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this platform
        return None


def noisy_reasons(median: float, iqr: float, runs: int, load: float | None, cores: int, cpu_wall: float,
                  threads: int, clock: str, device: str) -> list[str]:
    """Why a cost figure is not to be trusted (empty: it is clean).  The rule, any of:

    - fewer than :data:`MIN_RUNS` timed repeats;
    - IQR / median above :data:`MAX_REL_IQR`;
    - the 1-minute load average (the higher of before and after) above the cores available;
    - wall clock, CPU, one thread: the process's CPU/wall ratio below :data:`MIN_CPU_WALL` (it
      waited for a core, so the wall time includes other processes' work).
    """
    out = []
    if runs < MIN_RUNS:
        out.append(f"{runs} timed repeat{'s' if runs != 1 else ''} (< {MIN_RUNS})")
    elif not median > 0 or not iqr / median <= MAX_REL_IQR:
        out.append(f"IQR/median {iqr / median if median > 0 else math.inf:.2f} > {MAX_REL_IQR}")
    if load is not None and load > cores:
        out.append(f"load {load:.1f} > {cores} cores")
    if clock == "wall" and device == "cpu" and threads == 1 and cpu_wall < MIN_CPU_WALL:
        out.append(f"CPU/wall {cpu_wall:.2f} < {MIN_CPU_WALL}")
    return out


def _timed_call(fn, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def timed_draws(estimator: Estimator, problem: Problem, draws: int, generator: torch.Generator, warmup: int = 2):
    """``(seconds per draw, estimates)`` of one call of ``draws`` draws, after an untimed warm-up call of
    ``warmup`` draws (none at 0), the accelerator synchronised around it: the quick one-call estimate that
    the sweep's size checks and the Monte Carlo pilot use (a task's reported cost is :func:`measure_cost`'s)."""
    if warmup:
        estimator.estimate(problem, warmup, generator)
    out: list = []
    seconds = _timed_call(lambda: out.append(estimator.estimate(problem, draws, generator)), problem.device.type)
    return seconds / draws, out[0]


def measure_cost(estimator: Estimator, problem: Problem, settings: CostSettings, batch: int,
                 generator: torch.Generator, hint_s_per_draw: float | None = None) -> dict:
    """Measure the warm cost per draw of ``estimator`` on ``problem`` (see the module docstring).

    ``batch``: the accuracy run's draws per call (an upper bound); ``hint_s_per_draw``: its seconds
    per draw, used to size the batch before the first call.  Returns the record stored under the
    task's ``facts["cost"]``.
    """
    if settings.time_s <= 0:
        raise InputError("the cost measurement is off (time 0)")
    device = problem.device.type
    if settings.clock == "cpu" and device != "cpu":
        raise InputError("--clock cpu (process CPU time) can only time CPU work; use --device cpu")
    target = settings.time_s / CALLS_PER_BUDGET
    top = max(1, int(batch))
    b = top
    if hint_s_per_draw is not None and hint_s_per_draw > 0:
        b = max(1, min(top, int(target / hint_s_per_draw)))
    before_threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        threads = torch.get_num_threads()
        if settings.clock == "cpu" and threads != 1:
            raise InputError("--clock cpu measures process CPU time, which equals wall time only with --threads 1")
        start = time.perf_counter()
        first = _timed_call(lambda: estimator.estimate(problem, b, generator), device)  # compiles, if anything
        warm = _timed_call(lambda: estimator.estimate(problem, b, generator), device)
        for _ in range(_SIZING_STEPS):  # towards a call of about `target` seconds (fixed costs make it nonlinear)
            if warm > 2 * target and b > 1:
                b = max(1, int(b * target / warm))
            elif warm < target / 2 and b < top:
                b = min(top, max(2 * b, int(b * target / max(warm, 1e-9))))
            else:
                break
            warm = _timed_call(lambda: estimator.estimate(problem, b, generator), device)
        load_before = _load()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        timing = measure_interleaved({"draws": lambda: estimator.estimate(problem, b, generator)}, device=device,
                                     min_run_time=settings.time_s, rounds=MIN_RUNS, warmup=settings.warmup + 1,
                                     max_single_s=settings.time_s, clock=settings.clock)["draws"]
        cpu_wall = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-12)
        load_after = _load()
        spent = time.perf_counter() - start
    finally:
        torch.set_num_threads(before_threads)
    cores = cores_available()
    loads = [x for x in (load_before, load_after) if x is not None]
    load = max(loads) if loads else None
    median, iqr = timing.median / b, (timing.iqr / b if math.isfinite(timing.iqr) else math.nan)
    reasons = noisy_reasons(median, iqr, timing.runs, load, cores, cpu_wall, threads, settings.clock, device)
    return dict(measured=True, s_per_draw=median, iqr_s_per_draw=iqr, runs=timing.runs, batch=b,
                clock=settings.clock, threads=threads, device=device, warmup=settings.warmup,
                first_call_s=first, warm_call_s=warm, time_s=settings.time_s, spent_s=spent,
                load_before=load_before, load_after=load_after, cores=cores, cpu_wall=cpu_wall,
                noisy=bool(reasons), noisy_reasons=reasons)


def task_cost(estimator: Estimator, problem: Problem, task: dict, accuracy_s_per_draw: float) -> dict:
    """The cost record of a sweep task (settings from ``task["cost"]``; defaults for tasks without).

    With the measurement off, the record keeps the accuracy run's figure and says it is noisy.
    """
    settings = CostSettings.from_dict(task.get("cost"))
    if settings.time_s <= 0:
        rec = dict(measured=False, s_per_draw=accuracy_s_per_draw, iqr_s_per_draw=math.nan, runs=0, batch=0,
                   clock="wall", threads=torch.get_num_threads(), device=problem.device.type,
                   noisy=True, noisy_reasons=["not measured: the accuracy run's figure (compile time and load "
                                              "included)"])
    else:
        gen = torch.Generator(device=problem.device).manual_seed(int(task["seed"]) ^ _SEED_SALT)
        rec = measure_cost(estimator, problem, settings, chunk_size(problem, task["draws"], task.get("chunk")),
                           gen, hint_s_per_draw=accuracy_s_per_draw)
    rec["accuracy_run_s_per_draw"] = accuracy_s_per_draw
    return rec


def with_cost(rows: list[dict], s_per_draw: float) -> list[dict]:
    """Score rows with ``var_x_seconds`` recomputed as ``trace_var x s_per_draw`` (per group)."""
    tr = {r["group"]: r["value"] for r in rows if r["metric"] == "trace_var"}
    return [dict(r, value=tr[r["group"]] * s_per_draw) if r["metric"] == "var_x_seconds" and r["group"] in tr
            else r for r in rows]
