"""The SBN model: noises, losses, encodings, sampling and the Problem container."""

from __future__ import annotations

import pytest
import torch

from estimators.errors import InputError
from estimators.model.losses import LOSSES
from estimators.model import Problem, backprop, sample_path
from estimators.model.noise import NOISES
from reference.problems import random_problem


@pytest.mark.parametrize("noise", list(NOISES))
def test_noise_functions_are_finite_at_large_arguments(noise, dtype):
    law = NOISES[noise]
    a = torch.tensor([-100.0, -50.0, -1.0, 0.0, 0.5, 50.0, 100.0], dtype=dtype)
    for fn in (law.cdf, law.pdf, law.log_cdf):
        assert torch.isfinite(fn(a)).all()
    for x in (1.0, -1.0):
        assert torch.isfinite(law.score(torch.full_like(a, x), a)).all()


@pytest.mark.parametrize("noise", list(NOISES))
def test_noise_symmetry_density_and_score(noise):
    law = NOISES[noise]
    a = torch.linspace(-3.3, 3.3, 41, dtype=torch.float64, requires_grad=True)
    F = law.cdf(a)
    torch.testing.assert_close(law.cdf(-a), 1 - F)
    (dF,) = torch.autograd.grad(F.sum(), a)
    torch.testing.assert_close(dF, law.pdf(a.detach()))
    inside = F.detach() > 0
    torch.testing.assert_close(law.log_cdf(a.detach())[inside], torch.log(F.detach()[inside]))
    for x in (1.0, -1.0):
        logp = law.log_cdf(x * a)
        (ds,) = torch.autograd.grad(logp.sum(), a)
        ok = law.cdf(x * a.detach()) > 0
        torch.testing.assert_close(law.score(torch.full_like(a, x), a.detach())[ok], ds[ok])


def test_logistic_log_cdf_is_stable_in_the_tail():
    law = NOISES["logistic"]
    assert float(law.log_cdf(torch.tensor(-100.0))) == pytest.approx(-100.0)
    assert float(NOISES["gaussian"].log_cdf(torch.tensor(-100.0, dtype=torch.float64))) < -4000


@pytest.mark.parametrize("loss, n_out", [("logistic", 1), ("softmax", 4), ("squared", 3)])
def test_loss_gradients_match_autograd(loss, n_out):
    fn = LOSSES[loss]
    g = torch.Generator().manual_seed(0)
    eta = torch.randn(2, 5, n_out, dtype=torch.float64, generator=g, requires_grad=True)
    y = {"logistic": torch.tensor([1.0, -1, 1, -1, 1], dtype=torch.float64),
         "softmax": torch.tensor([0, 3, 1, 2, 0]),
         "squared": torch.randn(5, 3, dtype=torch.float64, generator=g)}[loss]
    v = fn.value(eta, y)
    assert v.shape == (2, 5)
    (d,) = torch.autograd.grad(v.sum(), eta)
    torch.testing.assert_close(fn.grad(eta.detach(), y), d)


def test_sampling_shapes_dtype_and_frequencies(dtype):
    p = random_problem(widths="2-3-4", points=6, seed=1).to(dtype=dtype)
    path = sample_path(p, 20000, torch.Generator().manual_seed(0))
    assert [x.shape for x in path.x] == [(20000, 6, 3), (20000, 6, 4)]
    assert all(x.dtype == dtype for x in path.x)
    assert set(torch.unique(path.x[1]).tolist()) == {-1.0, 1.0}
    # first-layer frequencies: P(x=+1) = F(a), tested at 6 sigma of the binomial
    freq = (path.x[0] > 0).double().mean(0)
    prob = torch.sigmoid(p.preact(0, p.X)).double()
    assert ((freq - prob).abs() <= 6 * torch.sqrt(prob * (1 - prob) / 20000) + 1e-12).all()


def test_sampling_is_reproducible_and_uses_the_given_generator():
    p = random_problem(widths="2-3-3", points=4)
    a = sample_path(p, 5, torch.Generator().manual_seed(7)).x[1]
    torch.manual_seed(123)  # the global generator must not matter
    b = sample_path(p, 5, torch.Generator().manual_seed(7)).x[1]
    assert torch.equal(a, b)


def test_01_encoding_matches_equivalent_pm1_network():
    """W x01 + b = (W/2) x_pm + (b + W 1/2) for binary inputs (``docs/model.md#encodings``)."""
    p = random_problem(widths="2-3-3", points=4, encoding="01", seed=2)
    q = p.replace(
        encoding="pm1",
        weights=(p.weights[0], p.weights[1] / 2),
        biases=(p.biases[0], p.biases[1] + p.weights[1].sum(1) / 2),
        head_weight=p.head_weight / 2,
        head_bias=p.head_bias + p.head_weight.sum(1) / 2,
    )
    gp, gq = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    xp, xq = sample_path(p, 50, gp), sample_path(q, 50, gq)
    assert torch.equal(xp.x[1], xq.x[1])
    torch.testing.assert_close(p.loss_of(xp.x[1]), q.loss_of(xq.x[1]))


def test_backprop_with_exact_slopes_equals_autograd_of_relaxed_network():
    p = random_problem(widths="2-3-2", points=3, seed=4)
    leaves = [t.clone().requires_grad_(True) for t in p.group_params()]
    q = p.with_group_params(leaves)
    m1 = torch.tanh(q.preact(0, q.X) / 2)
    m2 = torch.tanh(q.preact(1, m1) / 2)
    loss = q.loss_fn.value(q.head(m2), q.y).mean()
    auto = torch.autograd.grad(loss, leaves)
    a1 = p.preact(0, p.X)
    s1 = 0.5 * (1 - torch.tanh(a1 / 2) ** 2)
    a2 = p.preact(1, torch.tanh(a1 / 2))
    s2 = 0.5 * (1 - torch.tanh(a2 / 2) ** 2)
    ours = backprop(p, [p.X[None], torch.tanh(a1 / 2)[None]], [s1[None], s2[None]], torch.tanh(a2 / 2)[None])
    for x, y in zip(ours, auto):
        torch.testing.assert_close(x[0], y)


def test_group_params_round_trip_and_move():
    p = random_problem(widths="2-3-2", points=3, loss="softmax")
    q = p.with_group_params(p.group_params())
    assert all(torch.equal(a, b) for a, b in zip(p.group_params(), q.group_params()))
    r = p.to(dtype=torch.float32)
    assert r.dtype == torch.float32 and r.y.dtype == torch.long
    assert p.group_names == ("layer0", "layer1", "head")


@pytest.mark.parametrize("change, msg", [
    (dict(encoding="pm2"), "unknown encoding"),
    (dict(noise="cauchy"), "unknown noise"),
    (dict(loss="hinge"), "unknown loss"),
    (dict(weights=()), "at least one stochastic layer"),
])
def test_problem_validation(change, msg):
    p = random_problem(widths="2-3", points=3)
    with pytest.raises(InputError, match=msg):
        p.replace(**change)


def test_problem_rejects_nan_and_bad_labels():
    p = random_problem(widths="2-3", points=3)
    w = p.weights[0].clone()
    w[0, 0] = float("nan")
    with pytest.raises(InputError, match="'W1' contains NaN"):
        p.replace(weights=(w,))
    with pytest.raises(InputError, match="array 'y'"):
        p.replace(y=torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    assert isinstance(p, Problem)
