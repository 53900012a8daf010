"""DisARM: exact integration over the cells of u (Tier 0), the Rao-Blackwell identity with ARM, closed forms."""

from __future__ import annotations

import pytest
import torch

from estimators import registry
from estimators.families.arm import Arm, dphi_da
from estimators.families.arm import DisArm
from estimators.model import Path, sample_path
from helpers import cell_grid
from reference.exact import exact
from reference.problems import build_problem

def grid_moments(est, problem):
    path, w, _ = cell_grid(problem)
    grads = est.from_path(problem, path, torch.Generator().manual_seed(0))
    mean = {n: (w[:, None] * g).sum(0) for n, g in zip(problem.group_names, grads)}
    var = {n: (w[:, None] * (g - mean[n]) ** 2).sum(0) for n, g in zip(problem.group_names, grads)}
    return mean, var


ONE_LAYER = [
    "toy-relax1", "toy-psa1", "toy-liu3", "toy-arm4",
    "random:widths=2-3,points=1,seed=1",
    "random:widths=2-3,points=1,seed=2,encoding=01,loss=softmax,noise=gaussian",
    "random:widths=3-2,points=1,seed=3,noise=uniform,scale=0.7",
]


@pytest.mark.parametrize("spec", ONE_LAYER)
def test_exact_mean_by_cell_integration(spec):
    """The spec's (verify)-marked formula, sign convention included, is exactly unbiased."""
    p = build_problem(spec)
    mean, _ = grid_moments(DisArm(), p)
    ex = exact(p).grads
    for name in p.group_names:
        assert torch.allclose(mean[name], ex[name], atol=1e-13), (name, mean[name], ex[name])


@pytest.mark.parametrize("spec", ONE_LAYER)
def test_disarm_is_arm_conditioned_on_the_cells(spec):
    r"""Per node: DisARM(u) = E[ARM | cells of u] = ARM at the cell midpoints (ARM is affine in each $u_i$)."""
    p = build_problem(spec)
    path, w, mid = cell_grid(p)
    gen = torch.Generator().manual_seed(0)
    dis = DisArm().from_path(p, path, gen)
    arm_mid = Arm().from_path(p, Path(path.x, path.a, [mid], path.inputs), gen)
    keep = w > 0
    for g_d, g_a in zip(dis, arm_mid):
        assert torch.allclose(g_d[keep], g_a[keep], atol=1e-14)


@pytest.mark.parametrize("spec", ONE_LAYER)
def test_variance_not_above_arm(spec):
    p = build_problem(spec)
    _, v_dis = grid_moments(DisArm(), p)
    _, v_arm = grid_moments(Arm(), p)
    for name in p.group_names:
        assert bool((v_dis[name] <= v_arm[name] + 1e-15).all()), name


@pytest.mark.parametrize("spec", ["toy-relax1", "toy-psa1", "random:widths=1-1,points=1,seed=4,noise=gaussian"])
def test_single_unit_variance_closed_form(spec):
    r"""One unit, $q=F(a)$: $\hat g_a=\pm\frac12(f(1)-f(0))\max(q,1-q)\,\frac{d\phi}{da}$ on mass $2\min(q,1-q)$."""
    p = build_problem(spec)
    mean, var = grid_moments(DisArm(), p)
    a = p.preact(0, p.X)[0]
    one = torch.ones_like(a)
    df = (p.loss_of(one.view(1, 1, -1)) - p.loss_of(-one.view(1, 1, -1))).flatten()
    q = p.noise_law.cdf(a)
    lo, hi = torch.minimum(q, 1 - q), torch.maximum(q, 1 - q)
    second = 0.25 * df**2 * hi**2 * dphi_da(p, a) ** 2 * 2 * lo
    n0 = p.widths[0]
    assert torch.allclose(mean["layer0"][n0:], (df * p.noise_law.pdf(a)), atol=1e-15)
    assert torch.allclose(var["layer0"][n0:], second - mean["layer0"][n0:] ** 2, atol=1e-15)


def test_estimate_is_from_path_of_the_sampled_path(make_gen):
    p = build_problem("random:widths=2-3-3-2,points=4,seed=10,encoding=01")
    got = DisArm().estimate(p, 9, make_gen(4))
    gen = make_gen(4)
    want = DisArm().from_path(p, sample_path(p, 9, gen), gen)
    for name, w in zip(p.group_names, want):
        assert torch.equal(got[name], w)


def test_cost_matches_arm():
    p = build_problem("random:widths=2-3-3-3,points=1")
    assert registry.get("disarm").cost(p) == registry.get("arm").cost(p)
