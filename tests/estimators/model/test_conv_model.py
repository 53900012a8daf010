"""Convolutional layers in the model: pre-activations, input and parameter gradients, files, exact reference."""

from __future__ import annotations

import pytest
import torch

from reference.exact import exact
from reference.files import load_problem, save_problem
from reference.problems import build_problem

GEOMS = [
    "conv:input=2x5x5,channels=3-2,kernels=3-1,strides=1-1,paddings=0-0",
    "conv:input=1x6x6,channels=2-2,kernels=3-3,strides=2-1,paddings=1-1",
    "conv:input=2x7x7,channels=2-3,kernels=5-3,strides=2-2,paddings=1-0",
]


def _dense(problem, k):
    """The conv layer as an explicit matrix: column j = response to the j-th unit input (linear part only)."""
    n = problem.widths[k]
    eye = torch.eye(n, dtype=torch.float64)
    return (problem.preact(k, eye) - problem.biases[k].repeat_interleave(problem.layer_width(k) // problem.weights[k].shape[0])).T


@pytest.mark.parametrize("spec", GEOMS)
def test_input_and_parameter_gradients_match_autograd(spec):
    p = build_problem(spec + ",points=3,seed=1")
    g = torch.Generator().manual_seed(0)
    for k in range(p.depth):
        D, B = 2, p.batch_size
        inp = torch.randn(D, B, p.widths[k], dtype=torch.float64, generator=g)
        delta = torch.randn(D, B, p.widths[k + 1], dtype=torch.float64, generator=g)
        x = inp.clone().requires_grad_(True)
        (auto_in,) = torch.autograd.grad((p.preact(k, x) * delta).sum(), x)
        torch.testing.assert_close(p.input_grad(k, delta), auto_in)
        for d in range(D):
            W = p.weights[k].clone().requires_grad_(True)
            b = p.biases[k].clone().requires_grad_(True)
            q = p.replace(weights=p.weights[:k] + (W,) + p.weights[k + 1 :], biases=p.biases[:k] + (b,) + p.biases[k + 1 :])
            gw, gb = torch.autograd.grad((q.preact(k, inp[d]) * delta[d]).sum() / B, (W, b))
            torch.testing.assert_close(p.param_grad(k, delta, inp)[d], torch.cat([gw.flatten(), gb]))
        m = torch.rand(B, p.widths[k], dtype=torch.float64, generator=g)
        v = torch.rand(B, p.widths[k], dtype=torch.float64, generator=g)
        dense = _dense(p, k)
        mu, s2 = p.moment_preact(k, m, v)
        torch.testing.assert_close(s2, v @ (dense * dense).T)
        torch.testing.assert_close(mu, p.preact(k, m))


def test_conv_exact_reference_and_file_round_trip(tmp_path):
    p = build_problem("conv-tiny:encoding=01")
    t, b = exact(p), exact(p, "brute")
    torch.testing.assert_close(t.flat, b.flat, rtol=1e-10, atol=1e-13)
    save_problem(p, tmp_path / "c.npz")
    q = load_problem(tmp_path / "c.npz")
    assert q.conv == p.conv and q.widths == p.widths
    assert exact(q).loss == t.loss


def test_cifar_architecture_counts():
    c = build_problem("cifar-s1:points=2")
    assert sum(c.group_sizes) == 1_375_498
    assert sum(c.widths[1:]) == 221_280
