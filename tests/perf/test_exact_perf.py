"""Exact reference benchmarks: psa-2-5-5-5 and 2-10-10-10-1 with 200 points, and widths up to 12.

Benchmarks only (nothing is asserted on time); the README reports the measured medians."""

from __future__ import annotations

import pytest
import torch

from reference.exact import exact
from reference.problems import build_problem


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("spec", ["psa-2-5-5-5", "random:widths=2-10-10-10,points=200", "random:widths=2-12-12,points=200"])
@pytest.mark.benchmark(group="exact-reference", warmup=True, min_rounds=3)
def test_exact_loss_and_gradient(benchmark, spec):
    problem = build_problem(spec)
    result = benchmark(exact, problem)
    assert torch.isfinite(result.flat).all()
    benchmark.extra_info.update(problem=spec, points=problem.batch_size, widths=list(problem.widths))
