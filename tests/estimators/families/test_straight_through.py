"""Deep ST and the ad-hoc ST variants (``docs/estimators/straight-through.md``; claims 6, 10, 12 of
``docs/protocols.md#claims``).  Tier 0: exact enumeration and
per-path identities, no randomness in the assertions."""

from __future__ import annotations

import math

import pytest
import torch

from estimators import registry
from estimators.model import losses
from estimators.model import sample_path
from estimators.families.straight_through import DeepST
from helpers import LinearLoss, pull_back_01, to_01
from reference.exact import exact
from reference.moments import path_moments
from reference.problems import random_problem, toy_psa1

VARIANTS = ("st", "st-identity", "st-tanh", "st-hardtanh")


def test_reparametrisation_maps_exact_gradients():
    """Sanity of the two encoding helpers (to_01, pull_back_01 in tests/helpers.py), on the exact gradient."""
    p = random_problem("3-3-2-2", scale=1.2, seed=3, points=5, loss="softmax")
    g = exact(p).grads
    g01 = pull_back_01(p, list(exact(to_01(p)).grads.values()))
    for name, want in zip(p.group_names, g01):
        assert torch.allclose(g[name], want, rtol=0, atol=1e-13)


@pytest.mark.parametrize("noise", ["logistic", "gaussian"])
def test_deep_st_encoding_independent_per_path(noise, make_gen):
    """Claim 6: pm1 with 2F' and 0/1 with F' are the same estimator (compared path by path)."""
    p = random_problem("3-4-3-3", scale=1.3, seed=8, points=6, noise=noise, loss="softmax")
    q = to_01(p)
    st = registry.get("st")
    path_p, path_q = sample_path(p, 5, make_gen(4)), sample_path(q, 5, make_gen(4))
    assert all(torch.equal(u, v) for u, v in zip(path_p.x, path_q.x))
    got = pull_back_01(p, st.from_path(q, path_q))
    for want, g in zip(st.from_path(p, path_p), got):
        assert float((want - g).abs().max()) <= 1e-12


def _surrogate_grads(p, path, variant):
    """Autograd of the straight-through surrogate x = sg(enc x) + m(a) - sg(m(a)) for draw 0."""
    leaves = [g.detach().clone().requires_grad_(True) for g in p.group_params()]
    q = p.with_group_params(leaves)
    law = q.noise_law
    m_of = {
        "st": lambda a: q.enc(2 * law.cdf(a) - 1),
        "st-identity": lambda a: a,
        "st-tanh": torch.tanh,
        "st-hardtanh": lambda a: a.clamp(-1.0, 1.0),
    }[variant]
    inp = q.X
    for k in range(q.depth):
        m = m_of(q.preact(k, inp))
        inp = q.enc(path.x[k][0]) + m - m.detach()
    loss = q.loss_fn.value(q.head(inp), q.y).mean()
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("encoding", ["pm1", "01"])
def test_variants_equal_autograd_surrogate(variant, encoding, make_gen):
    p = random_problem("3-4-3-2", scale=1.0, seed=5, points=4, encoding=encoding, noise="logistic", loss="softmax")
    path = sample_path(p, 1, make_gen(7))
    got = registry.get(variant).from_path(p, path)
    for g, want in zip(got, _surrogate_grads(p, path, variant)):
        assert float((g[0] - want).abs().max()) <= 1e-13


def test_hardtanh_equals_deep_st_for_uniform_noise(make_gen):
    p = random_problem("3-4-3-2", scale=1.0, seed=5, points=6, noise="uniform", loss="softmax")
    path = sample_path(p, 8, make_gen(3))
    for a, b in zip(registry.get("st").from_path(p, path), registry.get("st-hardtanh").from_path(p, path)):
        assert torch.equal(a, b)


def test_deep_st_unbiased_head_biased_last_hidden():
    p = random_problem("2-3-3", scale=1.5, seed=2, points=4, loss="softmax")
    ex = exact(p)
    mom = path_moments(registry.get("st"), p)
    assert float((mom["head"][0] - ex.grads["head"]).abs().max()) <= 1e-10 * (1 + float(ex.grads["head"].norm()))
    last = p.group_names[-2]
    assert float((mom[last][0] - ex.grads[last]).norm() / ex.grads[last].norm()) > 1e-2


@pytest.mark.parametrize("encoding", ["pm1", "01"])
@pytest.mark.parametrize("noise", ["logistic", "gaussian"])
def test_deep_st_exact_for_one_layer_linear_loss(encoding, noise, monkeypatch):
    """``docs/estimators/straight-through.md#deep-st``: exact for one layer when f is linear in the states (a
    test-only linear loss)."""
    monkeypatch.setitem(losses.LOSSES, "linear", LinearLoss())
    monkeypatch.setattr(DeepST, "losses", DeepST.losses + ("linear",))
    p = random_problem("3-4", scale=1.5, seed=1, points=3, encoding=encoding, noise=noise, loss="squared", classes=2)
    p = p.replace(loss="linear")
    ex = exact(p)
    mom = path_moments(registry.get("st"), p)
    for g in p.group_names:
        assert float((mom[g][0] - ex.grads[g]).abs().max()) <= 1e-12 * (1 + float(ex.grads[g].norm()))
    # ... and not for the squared loss on the same network (the test can fail)
    q = p.replace(loss="squared")
    assert float((path_moments(registry.get("st"), q)["layer0"][0] - exact(q).grads["layer0"]).norm()) > 1e-3


def test_toy_psa1_moments():
    """``docs/protocols.md#toy`` / claim 12: ST on x = sign(1 - Z), f = (x - 0.3)^2: mean +0.1275, bias
    +0.3634, std 0.6974."""
    p = toy_psa1()
    mean, var = path_moments(registry.get("st"), p)["layer0"]
    truth = float(exact(p).grads["layer0"][1])
    # closed form: g = 2 sigma'(1) f'(x), f'(x) = 2 (x - 0.3), x = +1 w.p. sigma(1)
    s = 1 / (1 + math.exp(-1.0))
    vals, probs = [2 * s * (1 - s) * 2 * (x - 0.3) for x in (1, -1)], [s, 1 - s]
    m = sum(v * q for v, q in zip(vals, probs))
    sd = math.sqrt(sum(q * (v - m) ** 2 for v, q in zip(vals, probs)))
    assert abs(float(mean[1]) - m) < 1e-14 and abs(math.sqrt(float(var[1])) - sd) < 1e-14
    assert abs(truth - (-0.23593)) < 5e-6
    assert round(float(mean[1]), 4) == 0.1275
    assert round(float(mean[1]) - truth, 4) == 0.3634
    assert round(math.sqrt(float(var[1])), 4) == 0.6974
    assert float(mean[0]) == 0.0 and float(var[0]) == 0.0  # the input is the constant 0


def test_declarations():
    for name in VARIANTS:
        cls = registry.classes()[name]
        assert cls.path_deterministic and not cls.unbiased and cls.paths_per_draw == 1
    c = registry.get("st").cost(random_problem("2-3-3", points=2))
    assert (c.layer_evals, c.head_evals, c.backward_passes) == (2, 1, 1)
