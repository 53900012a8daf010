"""pytest-benchmark suites for convolutional SBNs (``tox -e perf``; skipped by the default ``--benchmark-skip``).

- ``psa-conv``: PSA's conv flip-difference backward for each hidden layer pair of CIFAR_S1
(``docs/protocols.md#cifar``)
  at batch 16, against the framework's conv backward of the same shape (``conv_transpose2d``, ST's
  input gradient).  ``extra_info`` holds terms/s ($N\\,C_{in}K^2C_{out}H_oW_o$ per call).
- ``draw-conv``: one whole-network gradient draw on CIFAR_S1 at batch 64, PSA (``kernel=auto``) and
  deep ST; ``extra_info`` holds draws/s.

Reported numbers and the verdicts on the ratio targets come from ``sbn-bench time --kernels
psa-conv,draw-conv`` (side by side, interleaved); these suites track regressions
(``docs/timing.md#perf-ab``).  The compiled kernel compiles
during warm-up.
"""

from __future__ import annotations

import time

import pytest
import torch

from estimators import registry
from estimators.model.noise import get_noise
from estimators.kernels.psa_conv import conv_flip_backward
from estimators.kernels.psa_conv_fused import conv_flip_backward_cuda, conv_flip_backward_fused
from reference.problems import build_problem

pytestmark = pytest.mark.perf

LAYERS = list(range(1, 8))  # layer pairs (k, k+1) of CIFAR_S1 whose lower layer is binary
KERNELS = {"eager": conv_flip_backward, "fused": conv_flip_backward_fused, "cuda": conv_flip_backward_cuda}


def sync_timer() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


BENCH = dict(timer=sync_timer, warmup=True, warmup_iterations=1, min_rounds=3, max_time=2.0, min_time=1e-3)


@pytest.fixture(scope="module")
def cifar():
    cache = {}

    def get(device, points):
        key = (device, points)
        if key not in cache:
            cache[key] = build_problem(f"cifar-s1:points={points}").to(dtype=torch.float32, device=device)
        return cache[key]

    return get


def _inputs(p, k, device):
    g = torch.Generator().manual_seed(k)
    x = (torch.randint(0, 2, (1, p.batch_size, p.widths[k]), generator=g) * 2 - 1).float().to(device)
    a = p.preact(k, x)
    h = torch.randn(a.shape, generator=g).to(device)
    return x, a, h


@pytest.mark.benchmark(group="psa-conv", **BENCH)
@pytest.mark.parametrize("variant", ["conv-bwd", "fused", "cuda"])
@pytest.mark.parametrize("k", LAYERS, ids=[f"L{k + 1}" for k in LAYERS])
def test_psa_conv_backward(benchmark, device, cifar, k, variant):
    if variant == "cuda" and device != "cuda":
        pytest.skip("the Triton kernel runs on CUDA only")
    p = cifar(device, 16)
    x, a, h = _inputs(p, k, device)
    geom = p.conv[k]
    terms = float(p.batch_size) * a.shape[-1] * geom.channels * geom.kernel**2
    if variant == "conv-bwd":
        benchmark(p.input_grad, k, h)
    else:
        benchmark(KERNELS[variant], x, a, p.weights[k], h, geom, get_noise("logistic"), 2.0)
    benchmark.extra_info.update(device=device, layer=k + 1, terms=terms, geometry=geom.as_array(),
                                threads=torch.get_num_threads())
    if benchmark.stats is not None:
        benchmark.extra_info["terms_per_s"] = terms / benchmark.stats.stats.median


@pytest.mark.benchmark(group="draw-conv", **BENCH)
@pytest.mark.parametrize("spec", ["psa:kernel=auto", "st"])
def test_cifar_draw(benchmark, device, cifar, spec):
    p, est = cifar(device, 64), registry.get(spec)
    gen = torch.Generator(device=device).manual_seed(0)
    benchmark.pedantic(est.estimate, args=(p, 1, gen), rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(device=device, batch=64, estimator=spec, threads=torch.get_num_threads())
    if benchmark.stats is not None:
        benchmark.extra_info["draws_per_s"] = 1.0 / benchmark.stats.stats.median
