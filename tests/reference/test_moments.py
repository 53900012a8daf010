"""Exact estimator moments by path enumeration (``docs/exact.md#exact-moments``).

- Tier 0: path probabilities and uniforms are consistent; a test-only score-function estimator
  (unbiased by construction, defined here so that no other module is needed) has an exact mean equal
  to the exact gradient in every layer; guards raise InputError.
- Tier 1 (``stat``): exact moments against a Monte Carlo twin of the same estimators (PSA, deep ST).
  False-fail budget of this module: 2.5e-4 family-wise (Bonferroni over every coordinate and
  every mean and variance test), with the power design asserted before the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar

import pytest
import torch

from estimators import registry
from estimators.base import Estimator
from estimators.errors import InputError
from estimators.model import head_grad, layer_grad
from reference.exact import all_states, exact
from reference.moments import enumerate_paths, path_moments
from reference.problems import random_problem


@dataclass(frozen=True)
class _Score(Estimator):
    """Test-only REINFORCE without a baseline: f(x^L) * grad log p(path); pathwise head (not registered)."""

    name: ClassVar[str] = "test-score"
    unbiased: ClassVar[bool] = True
    path_deterministic: ClassVar[bool] = True
    has_from_path: ClassVar[bool] = True
    summary: ClassVar[str] = "test only"

    def from_path(self, problem, path, generator=None):
        f = problem.loss_of(path.x[-1]).unsqueeze(-1)
        law = problem.noise_law
        grads = [layer_grad(f * law.score(x, a), inp) for x, a, inp in zip(path.x, path.a, path.inputs)]
        return grads + [head_grad(problem, problem.enc(path.x[-1]))]


@pytest.mark.parametrize("encoding,noise", [("pm1", "logistic"), ("01", "gaussian"), ("pm1", "uniform")])
def test_enumeration_probabilities_and_uniforms(encoding, noise):
    p = random_problem("2-2-3", scale=1.5, seed=1, points=1, encoding=encoding, noise=noise)
    states = all_states(5)
    path, logp = enumerate_paths(p, states)
    assert abs(float(torch.exp(logp).sum()) - 1.0) < 1e-14
    law = p.noise_law
    for x, a, u in zip(path.x, path.a, path.u):
        possible = law.cdf(x * a) > 0
        assert torch.equal(torch.where(u < law.cdf(a), 1.0, -1.0)[possible], x[possible].double())


@pytest.mark.parametrize("encoding", ["pm1", "01"])
@pytest.mark.parametrize("loss", ["logistic", "softmax"])
def test_score_function_mean_is_exact_gradient(encoding, loss):
    p = random_problem("2-2-3-2", scale=1.5, seed=3, points=3, encoding=encoding, loss=loss)
    ex = exact(p, method="brute")
    mom = path_moments(_Score(), p, chunk=5)  # odd chunk size: exercises the weighted merge
    for g in p.group_names:
        assert float((mom[g][0] - ex.grads[g]).abs().max()) <= 1e-12 * (1 + float(ex.grads[g].norm()))
    ref = path_moments(_Score(), p)  # one chunk: the same moments
    for g in p.group_names:
        assert torch.allclose(mom[g][0], ref[g][0], rtol=1e-12, atol=1e-15)
        assert torch.allclose(mom[g][1], ref[g][1], rtol=1e-10, atol=1e-15)


def test_variance_is_per_point_variance_over_b_squared():
    """Var of the batch mean of independent per-point draws: (1/B^2) sum_b Var_b."""
    p = random_problem("2-2-2", scale=1.0, seed=5, points=3)
    whole = path_moments(registry.get("st"), p)
    parts = [path_moments(registry.get("st"), p.subset(slice(b, b + 1))) for b in range(3)]
    for g in p.group_names:
        assert torch.allclose(whole[g][0], sum(q[g][0] for q in parts) / 3, rtol=1e-12, atol=1e-15)
        assert torch.allclose(whole[g][1], sum(q[g][1] for q in parts) / 9, rtol=1e-12, atol=1e-15)


def test_guards():
    p = random_problem("2-3-3", points=2)
    with pytest.raises(InputError):
        path_moments(registry.get("tanh"), p)  # not path-deterministic
    with pytest.raises(InputError):
        path_moments(registry.get("st"), p, max_paths=2**5)  # 2^6 paths per point
    with pytest.raises(InputError):
        enumerate_paths(p, all_states(6))  # two points


# ---- Monte Carlo twin (Tier 1) ----------------------------------------------------------------------

FAMILY_ALPHA = 2.5e-4
BETA = 1e-3
TWIN_ESTIMATORS = ("psa", "st")
N_DRAWS = 200_000
#: Smallest regressions the twin promises to catch: a mean shift of 5% of the per-draw standard
#: deviation of the coordinate, and a 10% change of the single-draw variance.
MEAN_DELTA, VAR_DELTA = 0.05, 0.10


@pytest.mark.stat
def test_monte_carlo_twin(make_gen):
    p = random_problem("2-2-2", scale=1.5, seed=7, points=2, loss="softmax", encoding="01")
    n_coords = sum(p.group_sizes)
    m = 2 * n_coords * len(TWIN_ESTIMATORS)  # mean and variance tests
    z_a = NormalDist().inv_cdf(1 - FAMILY_ALPHA / (2 * m))
    z_b = NormalDist().inv_cdf(1 - BETA)
    # power design (deterministic): SE * (z_a + z_b) <= delta, in units of the coordinate's std
    assert (z_a + z_b) / N_DRAWS**0.5 <= MEAN_DELTA
    for i, name in enumerate(TWIN_ESTIMATORS):
        est = registry.get(name)
        mom = path_moments(est, p)
        draws = est.estimate(p, N_DRAWS, make_gen(100 + i))
        for g in p.group_names:
            mean, var = mom[g]
            x = draws[g].double()
            xbar, s2 = x.mean(0), x.var(0)
            sd = var.sqrt()
            live = sd > 1e-12
            assert torch.allclose(xbar[~live], mean[~live], rtol=0, atol=1e-12)
            z = (xbar - mean)[live] / (sd[live] / N_DRAWS**0.5)
            assert float(z.abs().max()) <= z_a, (name, g, z.tolist())
            # variance: s^2 is asymptotically normal with SE sqrt((mu4 - sigma^4) / N); mu4 from the sample
            mu4 = ((x - mean) ** 4).mean(0)
            rel_se = ((mu4 / var.clamp_min(1e-300) ** 2 - 1).clamp_min(0) / N_DRAWS).sqrt()[live]
            assert float(rel_se.max()) * (z_a + z_b) <= VAR_DELTA, (name, g, rel_se.tolist())
            zv = (s2[live] / var[live] - 1) / rel_se
            assert float(zv.abs().max()) <= z_a, (name, g, zv.tolist())
