"""Local reparameterisation (``docs/estimators/relaxations.md#local-reparameterisation``).

Statistical budget: 0.25e-4 of the relaxation tests' family-wise false-fail rate of 2.5e-4 (see
test_concrete.py), split by Bonferroni over every coordinate of this module's z-tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from estimators import registry
from estimators.families.adf import ADF, propagate
from estimators.errors import InputError
from estimators.families.local_reparam import LocalReparam
from helpers import pull_back_01, to_01
from reference.problems import random_problem


@pytest.mark.parametrize("head", ["mean", "sample"])
@pytest.mark.parametrize("noise", ["logistic", "gaussian", "uniform"])
def test_equals_adf_for_one_hidden_layer(head, noise, make_gen):
    """The first layer reads the real input (s = 0), so with one hidden layer nothing is sampled but the head."""
    p = random_problem("3-4", seed=3, points=5, noise=noise, loss="softmax")
    lr = LocalReparam(head=head).estimate(p, 7, make_gen(1))
    adf = ADF(head=head).estimate(p, 7, make_gen(1))
    for k in p.group_names:
        torch.testing.assert_close(lr[k], adf[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtype_and_determinism(dtype, make_gen):
    p = random_problem("2-3-4-2", seed=1, points=6, loss="softmax").to(dtype=dtype)
    est = registry.get("local-reparam")
    a, b, c = (est.estimate(p, 5, make_gen(s)) for s in (0, 0, 1))
    assert list(a) == list(p.group_names)
    for k, size in zip(p.group_names, p.group_sizes):
        assert a[k].shape == (5, size) and a[k].dtype == dtype
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
        assert torch.isfinite(a[k]).all()
    assert not torch.equal(a["layer0"], c["layer0"])
    assert not torch.equal(a["layer0"][0], a["layer0"][1])  # every draw has its own noise


def test_head_validation():
    with pytest.raises(InputError):
        registry.get("local-reparam:head=max")


# ---- statistical: the mean over draws is the gradient of the expected surrogate -------------------
# The target E_eps[f] is integrated by tensor-product Gauss-Hermite quadrature over the noise of the
# second layer (2 units) and, with head="sample", the logit: smooth integrands (logistic/probit).

ALPHA, BETA = 0.25e-4, 1e-3
CASES = [("mean", "pm1", "logistic"), ("sample", "01", "gaussian")]
M_COORDS = len(CASES) * (6 + 6 + 3)  # widths 2-2-2, scalar head
Z_CRIT = stats.norm.isf(ALPHA / (2 * M_COORDS))
Z_POWER = Z_CRIT + stats.norm.isf(BETA)
REL_DELTA = 0.03  # smallest bias caught per coordinate: 3% of its group's target norm


def _surrogate_gradient(p, head: str, nodes: int) -> list[torch.Tensor]:
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    x, w = torch.tensor(x), torch.tensor(w / w.sum())
    dims = 3 if head == "sample" else 2
    grid = torch.stack(torch.meshgrid(*[x] * dims, indexing="ij"), -1).reshape(-1, dims)  # [Q, dims]
    wq = torch.stack(torch.meshgrid(*[w] * dims, indexing="ij"), -1).reshape(-1, dims).prod(1)
    B = p.batch_size
    layer_eps = [None, grid[:, None, :2].expand(-1, B, 2)]
    head_eps = grid[:, None, 2:].expand(-1, B, 1) if head == "sample" else None
    leaves = [g.detach().clone().requires_grad_(True) for g in p.group_params()]
    q = p.with_group_params(leaves)
    pairs = list(zip(q.weights, q.biases)) + [(q.head_weight, q.head_bias)]
    losses = propagate(q, [(w_.unsqueeze(0), b_.unsqueeze(0)) for w_, b_ in pairs], layer_eps, head_eps)
    return list(torch.autograd.grad((losses.mean(1) * wq).sum(), leaves))


@pytest.mark.stat
@pytest.mark.parametrize("head,encoding,noise", CASES)
def test_mean_is_gradient_of_expected_surrogate(head, encoding, noise):
    p = random_problem("2-2-2", seed=3, points=3, encoding=encoding, noise=noise, loss="logistic", scale=1.5)
    target = _surrogate_gradient(p, head, 32)
    check = _surrogate_gradient(p, head, 24)
    for t, c in zip(target, check):  # quadrature converged far below the resolution of the test
        assert float((t - c).abs().max()) < 1e-3 * REL_DELTA * float(t.norm())
    est = LocalReparam(head=head)
    pilot = est.estimate(p, 2000, torch.Generator().manual_seed(77))
    n = max(math.ceil((Z_POWER * float(pilot[k].std(0).max()) / (REL_DELTA * float(t.norm()))) ** 2)
            for k, t in zip(p.group_names, target))
    n = math.ceil(1.2 * n)
    out = est.estimate(p, n, torch.Generator().manual_seed(4321))
    for k, t in zip(p.group_names, target):
        se = out[k].std(0) / math.sqrt(n)
        assert bool((se * Z_POWER <= REL_DELTA * t.norm()).all()), f"design too weak for {k}, N={n}"
        z = (out[k].mean(0) - t) / se
        assert bool((z.abs() < Z_CRIT).all()), f"{head}/{encoding}/{noise} {k}: N={n} z={z.tolist()}"


@pytest.mark.parametrize("head", ["mean", "sample"])
@pytest.mark.parametrize("noise", ["logistic", "gaussian", "uniform"])
def test_same_estimator_in_both_encodings(head, noise, make_gen):
    """Same noise, same pre-activation moments under W01 = 2W, b01 = b - W 1: gradients related by the chain rule."""
    pm = random_problem("3-4-3-2", seed=5, points=6, encoding="pm1", noise=noise, loss="softmax")
    est = LocalReparam(head=head)
    g_pm = list(est.estimate(pm, 6, make_gen(3)).values())
    g_01 = list(est.estimate(to_01(pm), 6, make_gen(3)).values())
    for a, b in zip(g_pm, pull_back_01(pm, g_01)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
