"""Per-draw cost of the main estimators and PSA's cost relative to deep ST (pytest-benchmark).

Skipped in the default run (``--benchmark-skip``); run with
``pytest tests/perf --benchmark-only -k estimator``.  Everything runs on one CPU thread.

- ``test_per_draw_cost``: 10,000 draws on ``psa-2-5-5-5`` (200 points), processed in chunks of
  1,000 draws; ``extra_info`` holds ms per draw and draws/s.  A benchmark, not a check: absolute
  times depend on the machine, so nothing is asserted here; comparisons are made side by side
  (``tox -e perf-ab``, ``docs/timing.md#perf-ab``) and the verdicts on performance targets come
  from ``sbn-bench time`` (``docs/timing.md#throughput``).
- ``test_psa_over_st_ratio``: one draw on a ``w-w-w`` network (batch 256), PSA (eager and fused
  kernels) against deep ST measured side by side in alternating rounds (CPU time); ``extra_info``
  holds the median ratio.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from estimators import registry
from reference.problems import build_problem, random_problem

TOTAL_DRAWS, CHUNK = 10_000, 1_000
ESTIMATORS = ("st", "reinforce", "psa", "arm")


def _need(spec: str):
    name = spec.partition(":")[0]
    if name not in registry.names():
        pytest.skip(f"estimator {name!r} is not registered")
    return registry.get(spec)


@pytest.mark.perf
@pytest.mark.parametrize("name", ESTIMATORS)
def test_per_draw_cost(name, benchmark, one_thread):
    est = _need(name)
    p = build_problem("psa-2-5-5-5")
    gen = torch.Generator().manual_seed(0)

    def run():
        for _ in range(TOTAL_DRAWS // CHUNK):
            est.estimate(p, CHUNK, gen)

    benchmark.group = "estimator per-draw cost, psa-2-5-5-5"
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(problem="psa-2-5-5-5", draws=TOTAL_DRAWS, chunk=CHUNK, threads=1)
    if benchmark.stats is not None:
        med = benchmark.stats.stats.median
        benchmark.extra_info.update(ms_per_draw=med / TOTAL_DRAWS * 1e3, draws_per_s=TOTAL_DRAWS / med)


def _median_time(fn, rounds):
    """Median CPU time of ``fn`` (one thread: CPU time is robust to other load on the machine)."""
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


@pytest.mark.perf
@pytest.mark.parametrize("kernel", ["eager", "fused"])
@pytest.mark.parametrize("width", [256, 512, 1024])
def test_psa_over_st_ratio(width, kernel, benchmark, one_thread):
    p = random_problem(f"{width}-{width}-{width}", scale=1.0 / width**0.5, seed=0, points=256).to(torch.float32)
    psa, st = _need(f"psa:kernel={kernel}"), _need("st")
    gen = torch.Generator().manual_seed(0)
    run_psa = lambda: psa.estimate(p, 1, gen)  # noqa: E731
    run_st = lambda: st.estimate(p, 1, gen)  # noqa: E731
    for _ in range(2):  # warm up (the fused kernel compiles here)
        run_psa(), run_st()
    benchmark.group = f"psa / st, {width}-{width}-{width}, batch 256"
    benchmark.pedantic(run_psa, rounds=5, iterations=1, warmup_rounds=0)
    ratios = []
    for _ in range(5):  # alternate, so both see the same machine state
        ratios.append(_median_time(run_psa, 1) / _median_time(run_st, 3))
    benchmark.extra_info.update(width=width, batch=256, kernel=kernel, threads=1,
                                psa_over_st=statistics.median(ratios))
