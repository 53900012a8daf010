"""ADF moment propagation (``docs/estimators/relaxations.md#adf``).

Statistical budget: 0.25e-4 of the relaxation tests' family-wise false-fail rate of 2.5e-4 (see
test_concrete.py), split by Bonferroni over every coordinate of this module's z-tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from estimators import registry
from estimators.families.adf import ADF, adf_objective, expected_cdf, propagate
from estimators.errors import InputError
from estimators.model.noise import get_noise
from helpers import pull_back_01, to_01
from reference.exact import all_states, exact
from reference.problems import random_problem

NOISES = ["logistic", "gaussian", "uniform"]


def _quad_expected_cdf(noise: str, mu: float, s: float) -> float:
    """E_{a ~ N(mu, s^2)} F(a) by quadrature over a."""
    law = get_noise(noise)
    F = lambda a: float(law.cdf(torch.tensor(a, dtype=torch.float64)))  # noqa: E731
    dens = lambda a: math.exp(-0.5 * ((a - mu) / s) ** 2) / (s * math.sqrt(2 * math.pi))  # noqa: E731
    cuts = sorted({mu - 12 * s, -1.0, 1.0, mu + 12 * s})
    cuts = [c for c in cuts if mu - 12 * s <= c <= mu + 12 * s]
    return sum(integrate.quad(lambda a: F(a) * dens(a), lo, hi, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
               for lo, hi in zip(cuts[:-1], cuts[1:])) + (1 - stats.norm.cdf(12))


@pytest.mark.parametrize("noise", NOISES)
def test_gaussian_step_against_quadrature(noise):
    """Probit and uniform: exact closed forms.  Logistic: variance matching, exact at s = 0; its error
    peaks near 0.0226 (a scan over mu in [0, 8], s in [0.1, 20]), 0.025 still catches, e.g., a dropped or mis-scaled variance."""
    tol = 0.025 if noise == "logistic" else 1e-9
    for mu in (-3.0, -1.0, -0.3, 0.0, 0.5, 1.0, 2.5):
        P0, Q0 = expected_cdf(noise, torch.tensor(mu, dtype=torch.float64), None)
        assert float(P0) == pytest.approx(float(get_noise(noise).cdf(torch.tensor(mu, dtype=torch.float64))), abs=1e-15)
        for s in (1e-3, 0.2, 1.0, 3.0):
            P, Q = expected_cdf(noise, torch.tensor(mu, dtype=torch.float64), torch.tensor(s * s, dtype=torch.float64))
            assert float(P + Q) == pytest.approx(1.0, abs=1e-14)
            assert abs(float(P) - _quad_expected_cdf(noise, mu, s)) < tol, (noise, mu, s)


def test_first_layer_probabilities_exact_with_probit_noise():
    """One hidden layer, probit noise: ADF's unit probabilities equal the exact marginals from enumeration."""
    p = random_problem("3-4", seed=8, points=6, noise="gaussian", loss="logistic")
    rec: list = []
    propagate(p, [(w.unsqueeze(0), b.unsqueeze(0)) for w, b in
                  list(zip(p.weights, p.biases)) + [(p.head_weight, p.head_bias)]], record=rec)
    P_adf = rec[0][0][0]  # [B, n1]
    states = all_states(4)  # [16, 4]
    a = p.preact(0, p.X)  # [B, 4]
    joint = torch.exp(get_noise("gaussian").log_cdf(states[None] * a[:, None]).sum(-1))  # [B, 16]
    marginal = joint @ (states > 0).double()  # [B, 4]
    torch.testing.assert_close(P_adf, marginal, rtol=1e-12, atol=1e-14)
    # and the next layer's mean/variance are those of the exact marginal
    torch.testing.assert_close(rec[0][1][0], 2 * marginal - 1)
    torch.testing.assert_close(rec[0][2][0], 4 * marginal * (1 - marginal))


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("encoding", ["pm1", "01"])
def test_gradcheck_deterministic_objective(noise, encoding):
    p = random_problem("2-3-2", seed=1, points=3, encoding=encoding, noise=noise, loss="softmax", scale=0.8)
    eps = torch.randn((2, 3, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def objective(*flat):
        q = p.with_group_params(flat)
        return adf_objective(q), adf_objective(q, head_eps=eps)

    inputs = tuple(g.detach().clone().requires_grad_(True) for g in p.group_params())
    assert torch.autograd.gradcheck(objective, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("encoding", ["pm1", "01"])
def test_mean_head_estimate_is_the_objective_gradient(encoding, make_gen):
    p = random_problem("3-4-3", seed=2, points=5, encoding=encoding, loss="softmax")
    out = ADF().estimate(p, 5, make_gen(0))
    leaves = [g.detach().clone().requires_grad_(True) for g in p.group_params()]
    ref = torch.autograd.grad(adf_objective(p.with_group_params(leaves)), leaves)
    for name, r in zip(p.group_names, ref):
        assert out[name].shape == (5, r.numel())
        torch.testing.assert_close(out[name], r.expand(5, -1), rtol=1e-12, atol=1e-14)


def test_sample_head_deterministic_given_generator(make_gen):
    p = random_problem("3-4-3", seed=2, points=5, loss="logistic")
    est = registry.get("adf:head=sample")
    a, b = est.estimate(p, 6, make_gen(4)), est.estimate(p, 6, make_gen(4))
    c = est.estimate(p, 6, make_gen(5))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert not torch.equal(a["head"], c["head"])
    assert not torch.equal(a["head"][0], a["head"][1])  # draws differ


def test_head_validation():
    with pytest.raises(InputError):
        registry.get("adf:head=median")
    with pytest.raises(InputError):
        ADF(head="plain")


# ---- one hidden layer + squared loss: the sampled head is unbiased --------------------------------
# With one hidden layer the units are independent given x0, so ADF's logit means and variances are
# exact; for f = sum_c (eta_c - y_c)^2, E f = sum_c (mean_c - y_c)^2 + var_c depends on nothing else.
# Hence E_eps f(mean + sd * eps) is the exact expected loss and ADF with head="sample" is unbiased.

def _one_layer_problem(noise: str, encoding: str):
    return random_problem("3-3", seed=12, points=4, encoding=encoding, noise=noise, loss="squared", classes=2)


@pytest.mark.parametrize("noise", NOISES)
def test_expected_sample_head_objective_is_exact_for_one_layer_squared_loss(noise):
    p = _one_layer_problem(noise, "pm1")
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)  # exact for quadratics in eps
    eps = torch.tensor(nodes, dtype=torch.float64)
    w = torch.tensor(weights / weights.sum(), dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(eps, eps, indexing="ij"), -1).reshape(-1, 1, 2).expand(-1, p.batch_size, 2)
    wq = (w[:, None] * w[None, :]).reshape(-1)
    leaves = [g.detach().clone().requires_grad_(True) for g in p.group_params()]
    value = (adf_objective(p.with_group_params(leaves), head_eps=grid) * wq).sum()
    grads = torch.autograd.grad(value, leaves)
    ex = exact(p)
    assert float(value.detach()) == pytest.approx(ex.loss, rel=1e-12)
    for name, g in zip(p.group_names, grads):
        torch.testing.assert_close(g, ex.grads[name], rtol=1e-10, atol=1e-12)


ALPHA, BETA = 0.25e-4, 1e-3
STAT_CASES = [("gaussian", "pm1"), ("logistic", "01")]
M_COORDS = len(STAT_CASES) * (12 + 8)  # per case: layer0 3*3+3, head 2*3+2
Z_CRIT = stats.norm.isf(ALPHA / (2 * M_COORDS))
Z_POWER = Z_CRIT + stats.norm.isf(BETA)
REL_DELTA = 0.03  # smallest bias caught per coordinate: 3% of its group's exact gradient norm


@pytest.mark.stat
@pytest.mark.parametrize("noise,encoding", STAT_CASES)
def test_sample_head_unbiased_for_one_layer_squared_loss(noise, encoding):
    p = _one_layer_problem(noise, encoding)
    ex = exact(p)
    est = ADF(head="sample")
    pilot = est.estimate(p, 2000, torch.Generator().manual_seed(99))
    n = max(math.ceil((Z_POWER * float(pilot[k].std(0).max()) / (REL_DELTA * float(ex.grads[k].norm()))) ** 2)
            for k in p.group_names)
    n = math.ceil(1.2 * n)  # margin for the pilot's error in the standard deviation
    out = est.estimate(p, n, torch.Generator().manual_seed(1234))
    for k in p.group_names:
        se = out[k].std(0) / math.sqrt(n)
        assert bool((se * Z_POWER <= REL_DELTA * ex.grads[k].norm()).all()), f"design too weak for {k}, N={n}"
        z = (out[k].mean(0) - ex.grads[k]) / se
        assert bool((z.abs() < Z_CRIT).all()), f"{noise}/{encoding} {k}: N={n} z={z.tolist()}"


# ---- the same moment network in both encodings -----------------------------------------------------

@pytest.mark.parametrize("spec", ["adf", "adf:head=sample"])
@pytest.mark.parametrize("noise", NOISES)
def test_same_estimator_in_both_encodings(spec, noise, make_gen):
    """Means 2P-1 / P and variances 4PQ / PQ give identical pre-activation moments under W01 = 2W."""
    pm = random_problem("3-4-3-2", seed=5, points=6, encoding="pm1", noise=noise, loss="softmax")
    est = registry.get(spec)
    g_pm = list(est.estimate(pm, 6, make_gen(3)).values())
    g_01 = list(est.estimate(to_01(pm), 6, make_gen(3)).values())
    for a, b in zip(g_pm, pull_back_01(pm, g_01)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
