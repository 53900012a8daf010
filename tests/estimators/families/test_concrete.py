"""Concrete / Gumbel-Softmax relaxation (``docs/estimators/relaxations.md#concrete``, ``docs/protocols.md#toy``).

Statistical budget: this module spends 0.75e-4 of the family-wise false-fail rate of the relaxation
tests (2.5e-4 in all: concrete 0.75e-4, st-gumbel 0.75e-4, adf 0.25e-4, local-reparam 0.25e-4,
rebar 0.5e-4), split by Bonferroni over its ``M_TESTS`` z-tests.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from estimators import registry
from estimators.families.concrete import Concrete, noise_quantile, relaxed_grads
from estimators.errors import InputError
from helpers import logistic_pdf, noise_of_uniform, pull_back_01, quad_moments, to_01, toy_z_test
from reference.problems import random_problem

# ``docs/protocols.md#toy`` table: tau -> (GS bias, GS std) as printed (4 decimals).
SPEC_GS = {1: (0.1733, 0.2723), 0.5: (0.1372, 0.4638), 0.25: (0.0845, 0.7120),
           0.125: (0.0450, 1.0505), 0.1: (0.0363, 1.1853), 0.05: (0.0182, 1.7086)}
A, C = 1.0, 0.3  # toy: x = sign(A - Z), f = (x - C)^2

ALPHA, M_TESTS, BETA = 0.75e-4, 2 * len(SPEC_GS), 1e-3
Z_CRIT = stats.norm.isf(ALPHA / (2 * M_TESTS))
Z_POWER = Z_CRIT + stats.norm.isf(BETA)
DELTA_MEAN = 0.01  # smallest mean shift caught (4% of the exact gradient -0.236)
DELTA_VAR = 0.05  # smallest relative change of the variance caught


def gs_grad(z: float, tau: float) -> float:
    """d/da of f(tanh((a - z)/(2 tau))) at a = A: the GS single-draw estimate of the toy."""
    x = math.tanh((A - z) / (2 * tau))
    return 2 * (x - C) * (1 - x * x) / (2 * tau)


def toy_moments(tau: float) -> tuple[float, float, float]:
    """(mean, variance, fourth central moment) of the GS toy estimate by quadrature."""
    return quad_moments(lambda z: gs_grad(z, tau), tau, A)


EXACT = logistic_pdf(A) * ((1 - C) ** 2 - (-1 - C) ** 2)  # d/da E f = sigma'(1) (f(1) - f(-1))


def test_toy_exact_gradient_matches_spec():
    assert round(EXACT, 5) == -0.23593


@pytest.mark.parametrize("tau", list(SPEC_GS))
def test_toy_quadrature_reproduces_spec_table(tau):
    m, v, _ = toy_moments(tau)
    bias, std = SPEC_GS[tau]
    assert abs((m - EXACT) - bias) <= 0.5e-4 + 1e-9
    assert abs(math.sqrt(v) - std) <= 0.5e-4 + 1e-9


def test_bias_vanishes_roughly_linearly_in_tau():
    taus = [1.0, 0.5, 0.25, 0.125, 0.05]
    bias = [toy_moments(t)[0] - EXACT for t in taus]
    assert all(b > 0 for b in bias)
    assert all(b1 > b2 for b1, b2 in zip(bias, bias[1:])), bias  # monotone decrease as tau -> 0
    slope = bias[-1] / taus[-1]
    for t, b in zip(taus, bias):
        if t <= 0.25:  # approximately proportional to tau for small tau
            assert abs(b / t / slope - 1) < 0.1, (t, b)
    assert bias[-1] < 0.02


@pytest.mark.stat
@pytest.mark.parametrize("tau", list(SPEC_GS))
def test_toy_monte_carlo_matches_quadrature(tau):
    z_mean, z_var, info = toy_z_test(Concrete(tau=tau), tau, toy_moments(tau), seed=1000 + int(tau * 1000),
                                     shift=EXACT, z_power=Z_POWER, delta_mean=DELTA_MEAN, delta_var=DELTA_VAR)
    assert abs(z_mean) < Z_CRIT, info
    assert abs(z_var) < Z_CRIT, info


# ---- the relaxed network ------------------------------------------------------------------------

def _autograd_relaxed(problem, uniforms, tau, d):
    """Independent per-draw reference: autograd through the relaxed network written out directly."""
    leaves = [g.detach().clone().requires_grad_(True) for g in problem.group_params()]
    p = problem.with_group_params(leaves)
    inp = p.X
    for k, u in enumerate(uniforms):
        z = noise_of_uniform(p.noise, u[d])
        x01 = torch.sigmoid((p.preact(k, inp) - z) / tau)
        inp = p.enc(2 * x01 - 1)
    loss = p.loss_fn.value(p.head(inp), p.y).mean()
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("encoding", ["pm1", "01"])
@pytest.mark.parametrize("noise", ["logistic", "gaussian", "uniform"])
def test_equals_autograd_of_relaxed_network(encoding, noise, make_gen):
    problem = random_problem("2-3-4-3", seed=3, points=5, encoding=encoding, noise=noise, loss="softmax")
    g = make_gen(7)
    uniforms = [torch.rand((4, 5, n), generator=g, dtype=torch.float64) for n in problem.widths[1:]]
    got = relaxed_grads(problem, uniforms, 0.4)
    for d in range(4):
        ref = _autograd_relaxed(problem, uniforms, 0.4, d)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a[d], b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("spec", ["concrete:tau=0.3", "concrete:tau=2.0"])
def test_same_relaxation_in_both_encodings(spec, make_gen):
    est = registry.get(spec)
    pm = random_problem("3-4-3-2", seed=5, points=6, encoding="pm1", loss="softmax")
    p01 = to_01(pm)
    g_pm = list(est.estimate(pm, 16, make_gen(11)).values())
    g_01 = list(est.estimate(p01, 16, make_gen(11)).values())
    for a, b in zip(g_pm, pull_back_01(pm, g_01)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_temperature_validation():
    assert registry.get("concrete:tau=0.1").tau == 0.1
    assert registry.get("concrete:tau=1").tau == 1.0
    for bad in ("concrete:tau=0", "concrete:tau=-1.0", "concrete:tau=inf"):
        with pytest.raises(InputError):
            registry.get(bad)
    with pytest.raises(InputError):
        Concrete(tau=0.0)


@pytest.mark.parametrize("noise", ["logistic", "gaussian", "uniform"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_quantile_inverts_cdf_and_stays_finite(noise, dtype):
    from estimators.model.noise import get_noise

    u = torch.tensor([0.0, 1e-30, 0.01, 0.3, 0.5, 0.9, 1.0 - 1e-9, 1.0], dtype=dtype)
    z = noise_quantile(noise, u)
    assert torch.isfinite(z).all()
    mid = slice(2, 6)
    torch.testing.assert_close(get_noise(noise).cdf(z[mid]), u[mid], rtol=1e-5, atol=1e-6)
    assert bool((z[1:] >= z[:-1]).all())  # monotone
