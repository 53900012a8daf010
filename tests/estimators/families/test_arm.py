"""ARM: exact integration over the cells of u on single-layer problems (Tier 0), the downstream helper, numerics."""

from __future__ import annotations

import pytest
import torch

from estimators import registry
from estimators.families.arm import Arm, continue_losses, dphi_da
from estimators.model import sample_path
from helpers import cell_grid
from reference.exact import exact
from reference.problems import build_problem

def grid_moments(est, problem):
    path, w, _ = cell_grid(problem)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-14)
    grads = est.from_path(problem, path, torch.Generator().manual_seed(0))  # generator unused for L = 1
    mean = [(w[:, None] * g).sum(0) for g in grads]
    second = [(w[:, None] * g**2).sum(0) for g in grads]
    return dict(zip(problem.group_names, mean)), dict(zip(problem.group_names, second))


ONE_LAYER = [
    "toy-relax1", "toy-psa1", "toy-liu3", "toy-arm4",
    "random:widths=2-3,points=1,seed=1",
    "random:widths=2-3,points=1,seed=2,encoding=01,loss=softmax,noise=gaussian",
    "random:widths=3-2,points=1,seed=3,noise=uniform,scale=0.7",
]


@pytest.mark.parametrize("spec", ONE_LAYER)
@pytest.mark.parametrize("shared", [False, True])
def test_exact_mean_by_cell_integration(spec, shared):
    p = build_problem(spec)
    mean, _ = grid_moments(Arm(shared=shared), p)
    ex = exact(p).grads
    for name in p.group_names:
        assert torch.allclose(mean[name], ex[name], atol=1e-13), (name, mean[name], ex[name])


@pytest.mark.parametrize("spec", ["toy-relax1", "toy-psa1", "random:widths=1-1,points=1,seed=4,noise=gaussian"])
def test_single_unit_second_moment_closed_form(spec):
    r"""$\mathbb E[\hat g_a^2]=(f(1)-f(0))^2\,\frac23\big(\frac18-|p-\frac12|^3\big)\,(d\phi/da)^2$, $p=F(a)$."""
    p = build_problem(spec)
    _, second = grid_moments(Arm(), p)
    a = p.preact(0, p.X)[0]
    one = torch.ones_like(a)
    df = p.loss_of(one.view(1, 1, -1)) - p.loss_of(-one.view(1, 1, -1))
    q = p.noise_law.cdf(a)
    want = df**2 * (2 / 3) * (1 / 8 - (q - 0.5).abs() ** 3) * dphi_da(p, a) ** 2
    n = p.widths[1]
    bias_second = second["layer0"][n * p.widths[0]:]
    assert torch.allclose(bias_second, want.flatten(), rtol=1e-12, atol=1e-15)


def test_single_unit_mean_is_sigma_prime_times_difference():
    """The derived single-unit identity E[g_phi] = sigma'(phi)(f(1) - f(0)), at several logits."""
    for logit in (-3.0, -0.4, 0.0, 0.4, 2.5):
        p = build_problem("toy-relax1")
        p = p.replace(biases=(torch.tensor([logit], dtype=torch.float64),))
        mean, _ = grid_moments(Arm(), p)
        s = torch.sigmoid(torch.tensor(logit, dtype=torch.float64))
        want = s * (1 - s) * ((1 - 0.499) ** 2 - 0.499**2)
        assert float(mean["layer0"][1]) == pytest.approx(float(want), abs=1e-15)


# ---- downstream continuation ------------------------------------------------------------------------------------
def test_continuation_with_path_uniforms_reproduces_the_path(make_gen):
    p = build_problem("random:widths=2-4-3-3,points=5,seed=9,encoding=01")
    path = sample_path(p, 7, make_gen(0))
    f = p.loss_of(path.x[-1])
    for k in range(p.depth):
        got = continue_losses(p, k + 1, path.x[k].unsqueeze(0), None, uniforms=path.u[k + 1:])
        assert got.shape == (1, 7, 5)
        assert torch.equal(got[0], f)


def test_continuation_shared_and_fresh(make_gen):
    p = build_problem("random:widths=2-4-3-3,points=5,seed=9")
    path = sample_path(p, 400, make_gen(0))
    start = torch.stack([path.x[0], path.x[0]])
    shared = continue_losses(p, 1, start, make_gen(1), shared=True)
    fresh = continue_losses(p, 1, start, make_gen(1), shared=False)
    assert torch.equal(shared[0], shared[1])
    assert not torch.equal(fresh[0], fresh[1])
    head_only = continue_losses(p, p.depth, torch.stack([path.x[-1]] * 3), None)
    assert torch.equal(head_only[2], p.loss_of(path.x[-1]))


def test_estimate_is_from_path_of_the_sampled_path(make_gen):
    p = build_problem("random:widths=2-3-3-2,points=4,seed=10")
    for shared in (False, True):
        got = Arm(shared=shared).estimate(p, 9, make_gen(4))
        gen = make_gen(4)
        want = Arm(shared=shared).from_path(p, sample_path(p, 9, gen), gen)
        for name, w in zip(p.group_names, want):
            assert torch.equal(got[name], w)


# ---- numerics and declarations ----------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", ["logistic", "gaussian", "uniform"])
def test_dphi_da(noise, dtype):
    p = build_problem(f"random:widths=2-3,points=1,noise={noise}").to(dtype=dtype)
    law = p.noise_law
    a = torch.linspace(-0.9, 0.9, 7, dtype=dtype)
    F = law.cdf(a)
    assert torch.allclose(dphi_da(p, a), law.pdf(a) / (F * (1 - F)), rtol=1e-5)
    big = torch.tensor([-50.0, 50.0, -100.0, 100.0], dtype=dtype)
    assert bool(torch.isfinite(dphi_da(p, big)).all())
    if noise == "logistic":
        assert torch.allclose(dphi_da(p, big), torch.ones_like(big))


def test_cost_is_quadratic_in_depth():
    for widths, L in (("2-3", 1), ("2-3-3-3", 3), ("2-3-3-3-3-3", 5)):
        c = registry.get("arm").cost(build_problem(f"random:widths={widths},points=1"))
        assert (c.layer_evals, c.head_evals) == (L * L, 2 * L + 1)
