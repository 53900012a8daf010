"""Straight-through Gumbel-Softmax (spec §5.10, §8).

Statistical budget: 0.75e-4 of the relaxation tests' family-wise false-fail rate of 2.5e-4 (see
test_concrete.py), split by Bonferroni over this module's ``M_TESTS`` z-tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from estimators import registry
from estimators.errors import InputError
from estimators.model import sample_path
from estimators.st_gumbel import STGumbel, st_gumbel_grads
from reference.presets import random_problem, toy_psa1

# Spec §8 table: tau -> (ST-GS bias, ST-GS std) as printed (4 decimals).
SPEC_STGS = {1: (0.2674, 0.6498), 0.5: (0.1991, 0.9974), 0.25: (0.1185, 1.4599),
             0.125: (0.0624, 2.0990), 0.1: (0.0502, 2.3549), 0.05: (0.0253, 3.3546)}
A, C = 1.0, 0.3  # toy: x = sign(A - Z), f = (x - C)^2 in +-1

ALPHA, M_TESTS, BETA = 0.75e-4, 2 * len(SPEC_STGS), 1e-3
Z_CRIT = stats.norm.isf(ALPHA / (2 * M_TESTS))
Z_POWER = Z_CRIT + stats.norm.isf(BETA)
DELTA_MEAN = 0.01  # smallest mean shift caught (4% of the exact gradient)
DELTA_VAR = 0.05  # smallest relative change of the variance caught
EXACT = special.expit(A) * special.expit(-A) * ((1 - C) ** 2 - (-1 - C) ** 2)


def logistic_pdf(z: float) -> float:
    return special.expit(z) * special.expit(-z)


def stgs_grad(z: float, tau: float) -> float:
    """ST-GS single-draw estimate of the toy: f'(hard x) * (1/(2 tau)) (1 - tanh^2((A - z)/(2 tau)))."""
    x = 1.0 if z < A else -1.0
    r = math.tanh((A - z) / (2 * tau))
    return 2 * (x - C) * (1 - r * r) / (2 * tau)


def quad_expect(fn, tau: float) -> float:
    cuts = [-np.inf, A - 60 * tau, A, A + 60 * tau, np.inf]  # the hard state jumps at z = A
    return sum(integrate.quad(lambda z: fn(z) * logistic_pdf(z), lo, hi, limit=400, epsabs=1e-13, epsrel=1e-12)[0]
               for lo, hi in zip(cuts[:-1], cuts[1:]))


def toy_moments(tau: float) -> tuple[float, float, float]:
    m = quad_expect(lambda z: stgs_grad(z, tau), tau)
    v = quad_expect(lambda z: (stgs_grad(z, tau) - m) ** 2, tau)
    m4 = quad_expect(lambda z: (stgs_grad(z, tau) - m) ** 4, tau)
    return m, v, m4


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


def _toy_draws(tau: float, n: int, seed: int) -> tuple[float, float]:
    est, problem = STGumbel(tau=tau), toy_psa1()
    g = torch.Generator().manual_seed(seed)
    total, total2, done = 0.0, 0.0, 0
    while done < n:
        d = min(2**21, n - done)
        x = est.estimate(problem, d, g)["layer0"][:, 1] - EXACT
        total, total2, done = total + float(x.sum()), total2 + float((x * x).sum()), done + d
    mean = total / n
    return mean + EXACT, total2 / n - mean * mean


@pytest.mark.stat
@pytest.mark.parametrize("tau", list(SPEC_STGS))
def test_toy_monte_carlo_matches_quadrature(tau):
    m, v, m4 = toy_moments(tau)
    n = math.ceil(max((Z_POWER * math.sqrt(v) / DELTA_MEAN) ** 2, (Z_POWER * math.sqrt(m4 - v * v) / (DELTA_VAR * v)) ** 2))
    se_mean, se_var = math.sqrt(v / n), math.sqrt((m4 - v * v) / n)
    assert se_mean * Z_POWER <= DELTA_MEAN and se_var * Z_POWER <= DELTA_VAR * v  # the design
    mean, var = _toy_draws(tau, n, seed=2000 + int(tau * 1000))
    z_mean, z_var = (mean - m) / se_mean, (var - v) / se_var
    info = f"tau={tau} N={n} mean={mean:.5f} quad={m:.5f} var={var:.5f} quad={v:.5f} z=({z_mean:.2f}, {z_var:.2f})"
    assert abs(z_mean) < Z_CRIT, info
    assert abs(z_var) < Z_CRIT, info


def _autograd_straight_through(problem, path, tau, d):
    """Independent reference: x = sg(hard) + r(a) - sg(r(a)) with the Concrete r at the path's noise, per draw."""
    leaves = [g.detach().clone().requires_grad_(True) for g in problem.group_params()]
    p = problem.with_group_params(leaves)
    inp = p.X
    for k in range(p.depth):
        u = path.u[k][d].clamp(1e-15, 1 - 1e-15)
        z = {"logistic": torch.log(u / (1 - u)), "gaussian": math.sqrt(2) * torch.erfinv(2 * u - 1),
             "uniform": 2 * u - 1}[p.noise]
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


def _to_01(problem):
    ws, bs = list(problem.weights), list(problem.biases)
    for k in range(1, len(ws)):
        ws[k], bs[k] = 2 * ws[k], bs[k] - ws[k].sum(1)
    return problem.replace(weights=tuple(ws), biases=tuple(bs), head_weight=2 * problem.head_weight,
                           head_bias=problem.head_bias - problem.head_weight.sum(1), encoding="01")


def _pull_back_01(problem, g01):
    shapes = [w.shape for w in problem.weights] + [problem.head_weight.shape]
    out = [g01[0]]
    for g, (n, m) in zip(g01[1:], shapes[1:]):
        gw, gb = g[:, : n * m].reshape(-1, n, m), g[:, n * m :]
        out.append(torch.cat([(2 * gw - gb[:, :, None]).flatten(1), gb], 1))
    return out


def test_same_estimator_in_both_encodings(make_gen):
    """2/tau sigma' in pm1 and 1/tau sigma' in 0/1 give the same estimator (chain rule between parametrisations)."""
    pm = random_problem("3-4-3-2", seed=6, points=6, encoding="pm1", loss="softmax")
    p01 = _to_01(pm)
    est = STGumbel(tau=0.7)
    g_pm = list(est.estimate(pm, 16, make_gen(2)).values())
    g_01 = list(est.estimate(p01, 16, make_gen(2)).values())
    for a, b in zip(g_pm, _pull_back_01(pm, g_01)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_temperature_validation():
    assert registry.get("st-gumbel:tau=0.25").tau == 0.25
    for bad in ("st-gumbel:tau=0", "st-gumbel:tau=-0.5", "st-gumbel:tau=nan"):
        with pytest.raises(InputError):
            registry.get(bad)
