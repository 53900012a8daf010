"""pytest-benchmark suites, one group per kernel (``tox -e perf``; skipped by the default ``--benchmark-skip``).

Throughput goes into ``extra_info`` (items/s = items / median): sampled states, gradient draws, PSA
terms (one (row, i, j) triple each) against GEMM FLOPs of the same shape, exact joint states.  The
timer synchronises CUDA before reading the clock; warm-up is on (first calls allocate and compile).
Reported numbers come from ``sbn-bench time``; these suites track regressions (``docs/timing.md#perf-ab``: compare
base and candidate in the same job, on the median).
"""

from __future__ import annotations

import time

import pytest
import torch

from estimators import registry
from estimators.kernels import psa_fc, psa_fc_cuda
from estimators.model import sample_path
from estimators.model.noise import get_noise
from reference.exact import exact
from reference.problems import random_problem

pytestmark = pytest.mark.perf

NET = "256-512-512-512-512"
BATCH = 256


def sync_timer() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


BENCH = dict(timer=sync_timer, warmup=True, warmup_iterations=1, min_rounds=3, max_time=1.0, min_time=1e-3)


def _throughput(benchmark, items: float, unit: str, **info) -> None:
    benchmark.extra_info.update(info, unit=unit, items=items, threads=torch.get_num_threads())
    if benchmark.stats is not None:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info["items_per_s"] = items / median if median > 0 else None


def _gen(device: str, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@pytest.fixture(scope="module")
def nets():
    cache = {}

    def get(device):
        if device not in cache:
            cache[device] = random_problem(widths=NET, points=BATCH).to(dtype=torch.float32, device=device)
        return cache[device]

    return get


@pytest.mark.benchmark(group="sampling", **BENCH)
def test_sampling_forward(benchmark, device, nets):
    p, g = nets(device), _gen(device)
    benchmark(sample_path, p, 1, g)
    _throughput(benchmark, BATCH * sum(p.widths[1:]), "states/s", device=device, net=NET)


@pytest.mark.benchmark(group="draw", **BENCH)
@pytest.mark.parametrize("spec", ["st", "psa", "psa:kernel=eager", "reinforce"])
def test_estimator_draw(benchmark, device, nets, spec):
    p, g, est = nets(device), _gen(device), registry.get(spec)
    benchmark(est.estimate, p, 1, g)
    _throughput(benchmark, 1, "draws/s", device=device, net=NET, estimator=spec)


def _layer(device: str, w: int):
    g = _gen("cpu", w)
    x = (torch.randint(0, 2, (1, BATCH, w), generator=g) * 2 - 1).float()
    W = torch.randn(w, w, generator=g) / w**0.5
    a = x @ W.T + torch.randn(w, generator=g)
    h = torch.randn(1, BATCH, w, generator=g)
    return [t.to(device) for t in (x, a, W, h)]


KERNELS = {"eager": psa_fc.flip_backward, "fused": psa_fc.flip_backward_fused,
           "cuda": psa_fc_cuda.flip_backward_cuda}


@pytest.mark.benchmark(group="psa-fc", **BENCH)
@pytest.mark.parametrize("w", [512, 1024])
@pytest.mark.parametrize("variant", ["gemm", "eager", "fused", "cuda"])
def test_psa_fc_backward(benchmark, device, variant, w):
    if variant == "cuda" and device != "cuda":
        pytest.skip("the Triton kernel runs on CUDA only")
    x, a, W, h = _layer(device, w)
    terms = float(BATCH) * w * w
    if variant == "gemm":
        g = h.reshape(BATCH, w)
        benchmark(torch.matmul, g, W)
        _throughput(benchmark, 2 * terms, "FLOP/s", device=device, shape=f"{BATCH}x{w}x{w}")
        return
    benchmark(KERNELS[variant], x, a, W, h, get_noise("logistic"), 2.0)
    _throughput(benchmark, terms, "terms/s", device=device, shape=f"{BATCH}x{w}x{w}")


@pytest.mark.benchmark(group="exact", **BENCH)
@pytest.mark.parametrize("method", ["transfer", "brute"])
def test_exact_reference(benchmark, device, method):
    p = random_problem(widths="2-5-5-5", points=64).to(device=device)
    benchmark(exact, p, method)
    _throughput(benchmark, p.batch_size * 2.0 ** sum(p.widths[1:]), "joint states/s", device=device, method=method)
