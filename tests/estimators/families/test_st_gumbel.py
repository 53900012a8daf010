"""Straight-through Gumbel-Softmax (``docs/estimators/relaxations.md#st-gumbel``, ``docs/protocols.md#toy``).

Statistical budget: 0.75e-4 of the relaxation tests' family-wise false-fail rate of 2.5e-4 (see
test_concrete.py), split by Bonferroni over this module's ``M_TESTS`` z-tests.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import special, stats

from estimators import registry
from estimators.errors import InputError
from estimators.model import sample_path
from estimators.families.st_gumbel import STGumbel, st_gumbel_grads
from helpers import noise_of_uniform, pull_back_01, quad_moments, to_01, toy_z_test
from reference.problems import random_problem

# ``docs/protocols.md#toy`` table: tau -> (ST-GS bias, ST-GS std) as printed (4 decimals).
SPEC_STGS = {1: (0.2674, 0.6498), 0.5: (0.1991, 0.9974), 0.25: (0.1185, 1.4599),
             0.125: (0.0624, 2.0990), 0.1: (0.0502, 2.3549), 0.05: (0.0253, 3.3546)}
A, C = 1.0, 0.3  # toy: x = sign(A - Z), f = (x - C)^2 in +-1

ALPHA, M_TESTS, BETA = 0.75e-4, 2 * len(SPEC_STGS), 1e-3
Z_CRIT = stats.norm.isf(ALPHA / (2 * M_TESTS))
Z_POWER = Z_CRIT + stats.norm.isf(BETA)
DELTA_MEAN = 0.01  # smallest mean shift caught (4% of the exact gradient)
DELTA_VAR = 0.05  # smallest relative change of the variance caught
EXACT = special.expit(A) * special.expit(-A) * ((1 - C) ** 2 - (-1 - C) ** 2)


def stgs_grad(z: float, tau: float) -> float:
    """ST-GS single-draw estimate of the toy: f'(hard x) * (1/(2 tau)) (1 - tanh^2((A - z)/(2 tau)))."""
    x = 1.0 if z < A else -1.0
    r = math.tanh((A - z) / (2 * tau))
    return 2 * (x - C) * (1 - r * r) / (2 * tau)


def toy_moments(tau: float) -> tuple[float, float, float]:
    return quad_moments(lambda z: stgs_grad(z, tau), tau, A)  # the hard state jumps at z = A


@pytest.mark.parametrize("tau", list(SPEC_STGS))
def test_toy_quadrature_reproduces_spec_table(tau):
    m, v, _ = toy_moments(tau)
    bias, std = SPEC_STGS[tau]
    assert abs((m - EXACT) - bias) <= 0.5e-4 + 1e-9
    assert abs(math.sqrt(v) - std) <= 0.5e-4 + 1e-9


def test_toy_bias_shrinks_with_tau_and_std_grows():
    taus = [1.0, 0.5, 0.25, 0.125, 0.05]
    mom = [toy_moments(t) for t in taus]
    bias = [m - EXACT for m, _, _ in mom]
    assert all(b1 > b2 > 0 for b1, b2 in zip(bias, bias[1:]))
    std = [math.sqrt(v) for _, v, _ in mom]
    assert all(s1 < s2 for s1, s2 in zip(std, std[1:]))
    # std ~ tau^{-1/2}: sqrt(tau) * std is nearly constant for small tau
    assert abs(std[-1] * math.sqrt(taus[-1]) / (std[-2] * math.sqrt(taus[-2])) - 1) < 0.1


@pytest.mark.stat
@pytest.mark.parametrize("tau", list(SPEC_STGS))
def test_toy_monte_carlo_matches_quadrature(tau):
    z_mean, z_var, info = toy_z_test(STGumbel(tau=tau), tau, toy_moments(tau), seed=2000 + int(tau * 1000),
                                     shift=EXACT, z_power=Z_POWER, delta_mean=DELTA_MEAN, delta_var=DELTA_VAR)
    assert abs(z_mean) < Z_CRIT, info
    assert abs(z_var) < Z_CRIT, info


def _autograd_straight_through(problem, path, tau, d):
    """Independent reference: x = sg(hard) + r(a) - sg(r(a)) with the Concrete r at the path's noise, per draw."""
    leaves = [g.detach().clone().requires_grad_(True) for g in problem.group_params()]
    p = problem.with_group_params(leaves)
    inp = p.X
    for k in range(p.depth):
        z = noise_of_uniform(p.noise, path.u[k][d])
        r = torch.tanh((p.preact(k, inp) - z) / (2 * tau))
        x = path.x[k][d] + r - r.detach()
        inp = p.enc(x)
    loss = p.loss_fn.value(p.head(inp), p.y).mean()
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("encoding", ["pm1", "01"])
@pytest.mark.parametrize("noise", ["logistic", "gaussian", "uniform"])
def test_equals_autograd_of_straight_through_surrogate(encoding, noise, make_gen):
    problem = random_problem("2-3-4-3", seed=4, points=5, encoding=encoding, noise=noise, loss="softmax")
    path = sample_path(problem, 4, make_gen(3))
    got = st_gumbel_grads(problem, path, 0.3)
    for d in range(4):
        ref = _autograd_straight_through(problem, path, 0.3, d)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a[d], b, rtol=1e-9, atol=1e-12)


def test_forward_is_the_sampled_network(make_gen):
    """The estimator's sample is sample_path's (same generator); its head gradient is the pathwise one."""
    problem = random_problem("2-3-3", seed=2, points=7, loss="squared")
    est = STGumbel(tau=0.5)
    g_est = est.estimate(problem, 8, make_gen(5))
    path = sample_path(problem, 8, make_gen(5))
    xL = problem.enc(path.x[-1])
    deta = problem.loss_fn.grad(problem.head(xL), problem.y)
    head = torch.cat([torch.einsum("dbc,dbn->dcn", deta, xL).flatten(1), deta.sum(1)], 1) / problem.batch_size
    torch.testing.assert_close(g_est["head"], head)


def test_same_estimator_in_both_encodings(make_gen):
    """2/tau sigma' in pm1 and 1/tau sigma' in 0/1 give the same estimator (chain rule between parametrisations)."""
    pm = random_problem("3-4-3-2", seed=6, points=6, encoding="pm1", loss="softmax")
    p01 = to_01(pm)
    est = STGumbel(tau=0.7)
    g_pm = list(est.estimate(pm, 16, make_gen(2)).values())
    g_01 = list(est.estimate(p01, 16, make_gen(2)).values())
    for a, b in zip(g_pm, pull_back_01(pm, g_01)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_temperature_validation():
    assert registry.get("st-gumbel:tau=0.25").tau == 0.25
    for bad in ("st-gumbel:tau=0", "st-gumbel:tau=-0.5", "st-gumbel:tau=nan"):
        with pytest.raises(InputError):
            registry.get(bad)
