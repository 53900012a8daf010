"""tanh mean-field (``docs/estimators/relaxations.md#tanh``): deterministic, equal to autograd of the mean
network, encoding
independent, exact only in the one-layer linear case, biased otherwise.  No randomness."""

from __future__ import annotations

import pytest
import torch

from estimators import registry
from estimators.model import losses
from estimators.families.mean_field import TanhMeanField
from helpers import LinearLoss
from reference.exact import exact
from reference.problems import random_problem


def _autograd_mean_network(p):
    leaves = [g.detach().clone().requires_grad_(True) for g in p.group_params()]
    q = p.with_group_params(leaves)
    inp = q.X
    for k in range(q.depth):
        F = q.noise_law.cdf(q.preact(k, inp))
        inp = 2 * F - 1 if q.encoding == "pm1" else F
    loss = q.loss_fn.value(q.head(inp), q.y).mean()
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("encoding", ["pm1", "01"])
@pytest.mark.parametrize("noise", ["logistic", "gaussian", "uniform"])
def test_equals_autograd_and_ignores_generator(encoding, noise, make_gen):
    p = random_problem("3-4-3-3", scale=0.8, seed=2, points=5, encoding=encoding, noise=noise, loss="softmax")
    est = registry.get("tanh")
    a = est.estimate(p, 4, make_gen(0))
    b = est.estimate(p, 2, make_gen(123))
    for name, want in zip(p.group_names, _autograd_mean_network(p)):
        assert a[name].shape == (4, want.numel())
        assert torch.equal(a[name][0], a[name][3]) and torch.equal(a[name][0], b[name][1])
        assert float((a[name][0] - want).abs().max()) <= 1e-13


def test_encoding_independent():
    """The mean network is the same function after the pm1 -> 0/1 reparametrisation (``docs/model.md#encodings``)."""
    p = random_problem("3-3-2", scale=1.0, seed=4, points=4, loss="softmax")
    q = p.replace(weights=(p.weights[0], 2 * p.weights[1]), biases=(p.biases[0], p.biases[1] - p.weights[1].sum(1)),
                  head_weight=2 * p.head_weight, head_bias=p.head_bias - p.head_weight.sum(1), encoding="01")
    g = torch.Generator().manual_seed(0)
    gp, gq = registry.get("tanh").estimate(p, 1, g), registry.get("tanh").estimate(q, 1, g)
    assert torch.allclose(gp["layer0"], gq["layer0"], rtol=0, atol=1e-13)
    n, m = p.weights[1].shape
    w01, b01 = gq["layer1"][0, : n * m].view(n, m), gq["layer1"][0, n * m :]
    assert torch.allclose(gp["layer1"][0], torch.cat([(2 * w01 - b01[:, None]).flatten(), b01]), rtol=0, atol=1e-13)


def test_exact_for_one_layer_linear_loss_biased_otherwise(monkeypatch):
    monkeypatch.setitem(losses.LOSSES, "linear", LinearLoss())
    monkeypatch.setattr(TanhMeanField, "losses", TanhMeanField.losses + ("linear",))
    g = torch.Generator().manual_seed(0)
    p = random_problem("3-4", scale=1.5, seed=1, points=3, loss="squared", classes=2).replace(loss="linear")
    got = registry.get("tanh").estimate(p, 1, g)
    for name, want in exact(p).grads.items():
        assert float((got[name][0] - want).abs().max()) <= 1e-13
    # two layers (still a linear loss): E f(x^2) != f(m^2) in general, so the estimate is biased
    q = random_problem("3-4-3", scale=1.5, seed=1, points=3, loss="squared", classes=2).replace(loss="linear")
    got, want = registry.get("tanh").estimate(q, 1, g)["layer0"][0], exact(q).grads["layer0"]
    assert float((got - want).norm() / want.norm()) > 1e-2


def test_declarations():
    cls = registry.classes()["tanh"]
    assert not cls.unbiased and not cls.path_deterministic
