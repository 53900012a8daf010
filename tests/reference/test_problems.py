"""Named problems, the PSA data and initialisation, and the .npz problem format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from estimators.errors import InputError
from reference.datasets import psa_2d
from reference.files import load_problem, save_problem
from reference.problems import build_problem, moment_rescale


def test_psa_data_generator():
    X, y = psa_2d(200, seed=0)
    assert X.shape == (200, 2) and X.dtype == np.float64
    assert (y == 1).sum() == 100 and (y == -1).sum() == 100
    pos, neg = X[y == 1], X[y == -1]
    assert np.all(np.abs(X[:, 0]) <= math.pi / 2)
    assert np.all((pos[:, 1] >= 0) & (pos[:, 1] <= 1))
    assert np.all(neg[:, 1] < np.cos(neg[:, 0])) and np.all(neg[:, 1] >= -1)
    X2, _ = psa_2d(200, seed=0)
    assert np.array_equal(X, X2)


def test_psa_network_shape_and_rescaling():
    p = build_problem("psa-2-5-5-5")
    assert p.widths == (2, 5, 5, 5) and p.encoding == "01" and p.loss == "logistic"
    assert p.group_sizes == (15, 30, 30, 6)
    # after rescaling, the moment-propagated pre-activations have zero mean and unit variance
    m, v = p.X.mean(0), p.X.var(0, unbiased=False)
    for W, b in zip(p.weights, p.biases):
        torch.testing.assert_close(W @ m + b, torch.zeros(5, dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close((W * W) @ v, torch.ones(5, dtype=torch.float64), atol=1e-12, rtol=0)
        m, v = torch.full((5,), 0.5, dtype=torch.float64), torch.full((5,), 0.25, dtype=torch.float64)
    again = moment_rescale(p)  # idempotent
    torch.testing.assert_close(again.weights[1], p.weights[1])


def test_random_problem_options():
    p = build_problem("random:widths=3-4-2,scale=0.5,seed=7,points=11,encoding=01,noise=gaussian,loss=softmax,classes=4")
    assert p.widths == (3, 4, 2) and p.batch_size == 11 and p.n_out == 4
    assert p.encoding == "01" and p.noise == "gaussian" and p.y.dtype == torch.long


@pytest.mark.parametrize("spec, msg", [
    ("nope", "unknown problem 'nope'"),
    ("random:widths=5", "bad widths"),
    ("random:foo=1", "has no option 'foo'"),
    ("random:noise=laplace", "unknown noise 'laplace'"),
    ("psa-2-5-5-5@chk-7", "no checkpoint at epoch 7"),
])
def test_bad_problem_specs(spec, msg):
    with pytest.raises(InputError, match=msg):
        build_problem(spec)


@pytest.mark.parametrize("spec", ["psa-2-5-5-5", "toy-liu3", "random:loss=softmax,encoding=01,noise=uniform"])
def test_npz_round_trip_is_exact(tmp_path, spec):
    p = build_problem(spec)
    path = tmp_path / "p.npz"
    save_problem(p, path)
    q = load_problem(path)
    for a, b in zip(p.group_params(), q.group_params()):
        assert torch.equal(a, b)
    assert torch.equal(p.X, q.X) and torch.equal(p.y, q.y) and p.y.dtype == q.y.dtype
    assert (q.encoding, q.noise, q.loss, q.name) == (p.encoding, p.noise, p.loss, p.name)


def _arrays(p):
    out = {}
    for k, (w, b) in enumerate(zip(p.weights, p.biases), start=1):
        out[f"W{k}"], out[f"b{k}"] = w.numpy(), b.numpy()
    out.update(W_head=p.head_weight.numpy(), b_head=p.head_bias.numpy(), X=p.X.numpy(), y=p.y.numpy())
    return out


@pytest.mark.parametrize("mutate, msg", [
    (lambda a: a.update(W2=a["W2"][:, :3]), "it takes 3 inputs, but the layer before gives 5"),
    (lambda a: a.pop("b_head"), "missing array 'b_head'"),
    (lambda a: a["W1"].__setitem__((0, 0), np.nan), "array 'W1' contains NaN"),
    (lambda a: a.update(y=a["y"] * 2), "array 'y'"),
    (lambda a: a.update(X=a["X"][:5]), "array 'y' has"),
])
def test_npz_validation_names_the_array(tmp_path, mutate, msg):
    arrays = _arrays(build_problem("psa-2-5-5-5"))
    mutate(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match=msg) as info:
        load_problem(path)
    assert "\n" not in str(info.value)


def test_npz_settings_from_file_and_overrides(tmp_path):
    arrays = _arrays(build_problem("random:widths=2-3,loss=softmax,classes=3"))
    arrays["loss"] = np.array("softmax")
    arrays["noise"] = np.array("gaussian")
    path = tmp_path / "user.npz"
    np.savez(path, **arrays)
    p = load_problem(path)
    assert (p.loss, p.noise, p.encoding, p.name) == ("softmax", "gaussian", "pm1", "user")
    q = load_problem(path, noise="uniform", encoding="01")
    assert (q.noise, q.encoding) == ("uniform", "01")


def test_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a valid .npz problem file"):
        load_problem(path)


def test_random_fanin_init_keeps_preactivation_scale():
    """init=fanin: stochastic-layer weights N(0, scale^2 / fan-in); init=normal (the default) is unchanged."""
    from reference.problems import random_problem

    p = random_problem(widths="16-256-256", scale=2.0, init="fanin", seed=4)
    W = p.weights[1]
    assert abs(float(W.std()) * 256**0.5 / 2.0 - 1) < 0.02  # 65,536 draws: sd of the estimate ~0.3%
    q, r = random_problem(widths="3-4-4", seed=4), random_problem(widths="3-4-4", seed=4, init="normal")
    assert all(torch.equal(a, b) for a, b in zip(q.weights, r.weights)) and q.name == r.name
    with pytest.raises(InputError, match="unknown init 'xavier'"):
        random_problem(init="xavier")
