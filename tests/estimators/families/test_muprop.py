"""MuProp: exact unbiasedness by path enumeration (Tier 0), the mean-field Taylor pieces, declarations."""

from __future__ import annotations

import pytest
import torch

from estimators import registry
from estimators.errors import InputError
from estimators.families.muprop import MuProp, mean_field
from estimators.families.reinforce import Reinforce
from helpers import drop_analytic_term, exact_moments
from reference.exact import exact
from reference.problems import build_problem


SMALL = [
    "random:widths=2-2-2,points=3,seed=1",
    "random:widths=2-2-2,points=3,seed=2,encoding=01,loss=softmax",
    "random:widths=3-2-2-2,points=2,seed=3,noise=gaussian",
    "random:widths=2-2-3,points=2,seed=4,noise=uniform,encoding=01",
    "random:widths=2-3-2-2,points=2,seed=5,encoding=01,scale=2",
    "toy-arm4",
    "conv-tiny:points=3,encoding=01",
]


@pytest.mark.parametrize("spec", SMALL)
@pytest.mark.parametrize("point", ["conditional", "input"])
def test_exact_mean_equals_gradient(spec, point):
    p = build_problem(spec)
    mean, _ = exact_moments(MuProp(point=point).from_path, p)
    ex = exact(p).grads
    for name in p.group_names:
        assert torch.allclose(mean[name], ex[name], atol=1e-12, rtol=1e-10), name


def _without_correction(problem, path):
    """MuProp's control variate without the analytic term (biased)."""
    return drop_analytic_term(problem, path, MuProp().from_path(problem, path))


def test_the_analytic_term_is_what_makes_it_unbiased():
    p = build_problem(SMALL[0])
    mean, _ = exact_moments(_without_correction, p)
    ex = exact(p).grads
    gap = float((mean["layer0"] - ex["layer0"]).norm())
    assert gap > 0.1 * float(ex["layer0"].norm())


@pytest.mark.parametrize("spec", ["random:widths=2-3-3,points=3,seed=6",
                                  "random:widths=2-3-3,points=2,seed=6,scale=0.3",
                                  "random:widths=2-3,points=3,seed=6,encoding=01"])
@pytest.mark.parametrize("point", ["conditional", "input"])
def test_control_variate_lowers_the_exact_variance(spec, point):
    """A regression gate on the control variate (a wrong Jacobian keeps MuProp unbiased but useless).

    Exact variances by enumeration: every hidden layer below REINFORCE's, the last hidden layer below
    half of it (the downstream sampling noise that MuProp cannot remove is smallest there); the head
    (pathwise in both) is identical.
    """
    p = build_problem(spec)
    _, v_mu = exact_moments(MuProp(point=point).from_path, p)
    _, v_re = exact_moments(Reinforce().from_path, p)
    ratios = [float(v_mu[n].sum() / v_re[n].sum()) for n in p.group_names[:-1]]
    assert max(ratios) < 1.0 and ratios[-1] < 0.5, ratios
    assert torch.allclose(v_mu["head"], v_re["head"], atol=1e-15)


@pytest.mark.parametrize("spec", SMALL[:4])
def test_mean_field_matches_autograd(spec, dtype):
    p = build_problem(spec).to(dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    for start in range(0, p.depth + 1):
        if start == 0:
            m0 = p.X.clone()
        else:
            m0 = 2 * torch.rand(4, p.batch_size, p.widths[start], generator=gen, dtype=dtype) - 1
        m = m0.clone().requires_grad_(True)
        # direct mean-field forward, differentiated by autograd
        h = m
        for j in range(start, p.depth):
            h = 2 * p.noise_law.cdf(p.preact(j, h if j == 0 else p.enc(h))) - 1
        f_ref = p.loss_of(h)
        f, means, grads = mean_field(p, start, m0)
        tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
        assert torch.allclose(f, f_ref.detach(), **tol)
        assert len(means) == p.depth - start + 1 and len(grads) == p.depth - max(start, 1) + 1
        if start > 0:
            (g_ref,) = torch.autograd.grad(f_ref.sum(), m)
            assert torch.allclose(grads[0], g_ref, **tol)


def test_bad_point_raises():
    with pytest.raises(InputError):
        registry.get("muprop:point=sample")


def test_costs():
    p = build_problem("random:widths=2-3-3-3,points=1")
    c = registry.get("muprop").cost(p)
    assert (c.layer_evals, c.head_evals, c.backward_passes) == (6, 4, 2)
    c = registry.get("muprop:point=input").cost(p)
    assert (c.layer_evals, c.head_evals, c.backward_passes) == (6, 2, 2)
