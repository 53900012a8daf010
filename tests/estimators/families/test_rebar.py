"""REBAR per layer (``docs/estimators/score-function.md#rebar``), logistic noise.

Statistical budget: 0.5e-4 of the relaxation tests' family-wise false-fail rate of 2.5e-4 (see
test_concrete.py), split by Bonferroni over every coordinate of this module's z-tests.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from estimators import registry
from estimators.errors import InputError
from estimators.families.rebar import Rebar, conditional_logit, relaxed_continuation
from helpers import pull_back_01, to_01
from reference.exact import exact
from reference.problems import random_problem, toy_psa1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conditional_logit_is_the_conditional_quantile(dtype):
    """x=+1: sigma(a - z~) = v sigma(a) (Z~ = F^-1(v F(a)) < a); x=-1: the mirror image; sign(z~) = x."""
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(2000, generator=g, dtype=torch.float64) * 3).to(dtype)
    v = torch.rand(2000, generator=g, dtype=torch.float64).clamp(1e-6, 1 - 1e-6).to(dtype)
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-13)
    for sign in (1.0, -1.0):
        x = torch.full_like(a, sign)
        z, _ = conditional_logit(x, a, v)
        assert bool((torch.sign(z) == x).all())
        torch.testing.assert_close(torch.sigmoid(sign * (a - z)), v * torch.sigmoid(sign * a), **tol)


def test_conditional_logit_derivative_and_saturation():
    g = torch.Generator().manual_seed(1)
    a = (torch.randn(50, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    v = torch.rand(50, generator=g, dtype=torch.float64)
    x = torch.where(torch.rand(50, generator=g, dtype=torch.float64) < 0.5, 1.0, -1.0).double()
    z, dz = conditional_logit(x, a, v)
    (auto,) = torch.autograd.grad(z.sum(), a)
    torch.testing.assert_close(dz, auto)
    big = torch.tensor([50.0, -50.0, 50.0, -50.0])
    xs = torch.tensor([1.0, -1.0, -1.0, 1.0])
    for out in conditional_logit(xs, big, torch.tensor([0.0, 1.0, 0.5, 1e-7])):
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("k", [0, 1, 2])
def test_continuation_derivative_matches_autograd(k, make_gen):
    p = random_problem("2-3-4-3", seed=2, points=4, encoding="01", loss="softmax")
    g = make_gen(3)
    Z = [torch.logit(torch.rand((2, 4, n), generator=g, dtype=torch.float64)) for n in p.widths[1:]]
    zeta = torch.randn((2, 4, p.widths[k + 1]), generator=g, dtype=torch.float64).requires_grad_(True)
    c, dc = relaxed_continuation(p, k, zeta, Z, 0.7)
    (auto,) = torch.autograd.grad(c.sum(), zeta)
    torch.testing.assert_close(dc, auto)


def test_declarations_and_restrictions(make_gen):
    est = registry.get("rebar:tau=0.3")
    assert est.unbiased and est.tau == 0.3
    with pytest.raises(InputError):
        est.estimate(random_problem("2-3", noise="gaussian"), 2, make_gen(0))
    with pytest.raises(InputError):
        registry.get("rebar:tau=0")
    assert est.cost(random_problem("2-3-3-3")).layer_evals == 3 + 3 * 4


# ---- unbiasedness against the exact gradient ------------------------------------------------------

ALPHA, BETA = 0.5e-4, 1e-3
CASES = {
    "toy-psa1": toy_psa1,
    "2-3-2-2 pm1 softmax": lambda: random_problem("2-3-2-2", seed=0, points=3, encoding="pm1", loss="softmax"),
    "2-3-3 01 logistic": lambda: random_problem("2-3-3", seed=0, points=3, encoding="01", loss="logistic"),
}
M_COORDS = 4 + (9 + 8 + 6 + 9) + (9 + 12 + 4)
Z_CRIT = stats.norm.isf(ALPHA / (2 * M_COORDS))
Z_POWER = Z_CRIT + stats.norm.isf(BETA)
REL_DELTA = 0.05  # smallest bias caught per coordinate: 5% of its group's exact gradient norm


@pytest.mark.stat
@pytest.mark.parametrize("case", list(CASES))
def test_unbiased_against_exact_gradient(case):
    p = CASES[case]()
    ex = exact(p)
    assert sum(g.numel() for g in ex.grads.values()) <= M_COORDS
    est = Rebar()
    pilot = est.estimate(p, 4000, torch.Generator().manual_seed(5))
    n = max(math.ceil((Z_POWER * float(pilot[k].std(0).max()) / (REL_DELTA * float(ex.grads[k].norm()))) ** 2)
            for k in p.group_names)
    n = math.ceil(1.2 * n)
    out = est.estimate(p, n, torch.Generator().manual_seed(6))
    for k in p.group_names:
        sd = out[k].std(0)
        fixed = sd == 0  # coordinates with no randomness (e.g. the toy's weight, whose input is 0)
        torch.testing.assert_close(out[k].mean(0)[fixed], ex.grads[k][fixed], rtol=0, atol=1e-12)
        se = sd[~fixed] / math.sqrt(n)
        assert bool((se * Z_POWER <= REL_DELTA * ex.grads[k].norm()).all()), f"design too weak for {k}, N={n}"
        z = (out[k].mean(0)[~fixed] - ex.grads[k][~fixed]) / se
        assert bool((z.abs() < Z_CRIT).all()), f"{case} {k}: N={n} z={z.tolist()}"


def test_same_estimator_in_both_encodings(make_gen):
    pm = random_problem("3-4-3-2", seed=5, points=6, encoding="pm1", loss="softmax")
    est = Rebar(tau=0.8)
    g_pm = list(est.estimate(pm, 6, make_gen(3)).values())
    g_01 = list(est.estimate(to_01(pm), 6, make_gen(3)).values())
    for a, b in zip(g_pm, pull_back_01(pm, g_01)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
