"""Scoring engine: exact streaming moments, M-groups across chunks, analytic vs empirical MSE."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from bench.accumulate import Moments
from bench.scoring import psa_grid, score
from estimators.base import Estimator
from reference.problems import random_problem

PROBLEM = random_problem(widths="2-2-2", points=3, seed=0)  # groups of sizes 6, 6, 3


def _exact_like(g: np.ndarray) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for name, size in zip(PROBLEM.group_names, PROBLEM.group_sizes):
        out[name] = torch.as_tensor(g[start : start + size])
        start += size
    return out


@dataclass(frozen=True, eq=False)
class Replay(Estimator):
    """Test double: hands out the rows of a fixed array in order (chunking cannot change the stream)."""

    name: ClassVar[str] = "replay"
    summary: ClassVar[str] = "test double"
    rows: np.ndarray = field(default=None)
    pos: list = field(default_factory=lambda: [0])

    def _estimate(self, problem, draws, generator):
        i = self.pos[0]
        block = torch.as_tensor(self.rows[i : i + draws])
        self.pos[0] += draws
        out, start = [], 0
        for size in problem.group_sizes:
            out.append(block[:, start : start + size])
            start += size
        return out


@dataclass(frozen=True)
class Gaussian(Estimator):
    """Test double: i.i.d. draws g + b + sd * N(0, 1) with a known bias b and variance sd^2 per coordinate."""

    name: ClassVar[str] = "gauss"
    summary: ClassVar[str] = "test double"
    shift: float = 0.05
    sd: float = 0.3

    def _estimate(self, problem, draws, generator):
        out = []
        for name, size in zip(problem.group_names, problem.group_sizes):
            base = torch.as_tensor(G[_slice(name)])
            out.append(base + self.shift + self.sd * torch.randn(draws, size, generator=generator, dtype=torch.float64))
        return out


G = np.linspace(-1.0, 1.0, sum(PROBLEM.group_sizes))


def _slice(name):
    start = 0
    for n, s in zip(PROBLEM.group_names, PROBLEM.group_sizes):
        if n == name:
            return slice(start, start + s)
        start += s


def test_chan_merge_is_exact():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(1001, 4))
    m = Moments(4)
    for a, b in [(0, 1), (1, 400), (400, 401), (401, 1001)]:
        m.update(x[a:b])
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(m.var, x.var(0, ddof=1), rtol=1e-12)
    left, right = Moments(4).update(x[:300]), Moments(4).update(x[300:])
    merged = left.merge(right)
    np.testing.assert_allclose(merged.m2, ((x - x.mean(0)) ** 2).sum(0), rtol=1e-12)


def test_psa_grid():
    grid = psa_grid(9999)
    assert grid[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] and grid[-1] == 9000 and len(grid) == 36


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_empirical_groups_match_direct_computation(chunk):
    rng = np.random.default_rng(1)
    N = 1000
    rows = rng.normal(0.1, 1.0, size=(N, G.size)) + G
    res = score(Replay(rows=rows), PROBLEM, _exact_like(G), N, torch.Generator(), grid=[1, 3, 10, 333], chunk=chunk)
    df = pd.DataFrame(res.rows)
    gnorm = np.linalg.norm(G[_slice("layer1")])
    for M in (1, 3, 10, 333):
        k = N // M
        means = rows[: k * M].reshape(k, M, -1).mean(1)[:, _slice("layer1")]
        err = ((means - G[_slice("layer1")]) ** 2).sum(1)
        cos = means @ G[_slice("layer1")] / (np.linalg.norm(means, axis=1) * gnorm)
        got = df[(df.group == "layer1") & (df.M == M)].set_index("metric").value
        assert got["rel_rmse_emp"] == pytest.approx(math.sqrt(err.mean()) / gnorm, rel=1e-10)
        assert got["cos_mean"] == pytest.approx(cos.mean(), rel=1e-10)
        assert got["cos_q15"] == pytest.approx(np.quantile(cos, 0.15), rel=1e-10)
    var = rows.var(0, ddof=1).sum()
    got = df[(df.group == "all") & (df.M == 0)].set_index("metric").value
    assert got["trace_var"] == pytest.approx(var, rel=1e-10)
    assert got["grad_norm"] == pytest.approx(np.linalg.norm(G), rel=1e-12)


def test_analytic_and_empirical_mse_agree_and_cover_the_truth():
    """For an i.i.d. estimator with known bias b and variance, both MSE(M) forms agree within their CIs.

    Design: deterministic seed; each comparison uses |analytic - empirical| <= 4 * (combined 95% half
    widths / 1.96), a per-comparison false-fail rate of about 6e-5, 12 comparisons: <= 1e-3 overall.
    """
    est = Gaussian()
    N = 40000
    res = score(est, PROBLEM, _exact_like(G), N, torch.Generator().manual_seed(5), grid=[1, 10, 100, 1000])
    df = pd.DataFrame(res.rows)
    for group in ("layer0", "head", "all"):
        s = _slice(group) if group != "all" else slice(0, G.size)
        size = s.stop - s.start
        gn = np.linalg.norm(G[s])
        for M in (1, 10, 100, 1000):
            if M == 1000 and group == "head":
                continue
            a = df[(df.group == group) & (df.M == M) & (df.metric == "rel_rmse")].iloc[0]
            e = df[(df.group == group) & (df.M == M) & (df.metric == "rel_rmse_emp")].iloc[0]
            se = math.hypot(a.hi - a.lo, e.hi - e.lo) / (2 * 1.96)
            assert abs(a.value - e.value) <= 4 * se, (group, M, a.value, e.value, se)
            truth = math.sqrt(size * est.shift**2 + size * est.sd**2 / M) / gn
            assert abs(a.value - truth) <= 4 * (a.hi - a.lo) / (2 * 1.96), (group, M, a.value, truth)
        b = df[(df.group == group) & (df.metric == "bias_norm")].iloc[0]
        assert b.lo <= math.sqrt(size) * est.shift <= b.hi


def test_zero_variance_and_zero_gradient_are_handled():
    rows = np.tile(G + 0.5, (50, 1))
    res = score(Replay(rows=rows), PROBLEM, _exact_like(np.zeros_like(G)), 50, torch.Generator(), grid=[1, 5])
    df = pd.DataFrame(res.rows)
    assert (df[df.metric == "trace_var"].value < 1e-25).all()  # zero up to the rounding of float64 means
    assert df[df.metric == "rel_bias"].value.isna().all()  # relative to a zero gradient: undefined
    assert df[df.metric == "rel_rmse_emp"].value.isna().all()
    assert np.isfinite(df[df.metric == "bias_norm"].value).all()


def test_a_deterministic_estimator_has_exactly_zero_variance():
    """Rows that never vary give M2 = 0 exactly (a rounded chunk mean used to leave ~1e-30)."""
    from bench.accumulate import Moments
    x = np.array([0.1, 1 / 3, 2e-7, -5.3])
    m = Moments(4)
    for k in (3, 7, 1, 11):  # chunks of several sizes, merged
        m.update(np.tile(x, (k, 1)))
    assert m.n == 22 and np.array_equal(m.mean, x) and np.array_equal(m.m2, np.zeros(4))
    before = Moments(4).update(np.tile(x, (3, 1))).update(np.array([x + [0, 0, 0, 1e-3]]))
    assert before.m2[3] > 0 and np.array_equal(before.m2[:3], np.zeros(3))  # a varying coordinate still varies


def test_tanh_trace_of_variance_is_exactly_zero():
    from bench.scoring import score
    from estimators import registry
    from reference import exact
    from reference.problems import build_problem
    problem = build_problem("psa-2-5-5-5")
    ex = exact(problem, "transfer")
    res = score(registry.get("tanh"), problem, ex.grads, 300, torch.Generator().manual_seed(0), grid=[1, 10], chunk=64)
    tv = [r["value"] for r in res.rows if r["metric"] == "trace_var"]
    assert tv and all(v == 0.0 for v in tv)


def test_an_estimator_returning_other_groups_is_named_by_the_contract():
    from estimators import registry
    from estimators.errors import InputError
    from reference import exact
    from reference.problems import build_problem

    class MissingHead:
        spec = "missing-head"

        def estimate(self, problem, draws, generator):
            out = registry.get("st").estimate(problem, draws, generator)
            return {g: v for g, v in out.items() if g != "head"}

    problem = build_problem("toy-liu3")
    ex = exact(problem, "transfer")
    with pytest.raises(InputError, match=r"returned groups \['layer0'\], expected \['layer0', 'head'\]"):
        score(MissingHead(), problem, ex.grads, 10, torch.Generator().manual_seed(0), grid=[1])
