"""Local expectation: exact mean for one hidden layer (Tier 0), the stacked flips against a per-unit loop, chunking."""

from __future__ import annotations

import pytest
import torch

from estimators import registry
from estimators.families import local_expectation
from estimators.errors import InputError
from estimators.families.local_expectation import LocalExpectation
from estimators.model import layer_grad, sample_path
from helpers import enumerate_paths
from reference.exact import exact
from reference.problems import build_problem


ONE_HIDDEN = [
    "toy-liu3", "toy-arm4", "toy-psa1",
    "random:widths=2-4,points=3,seed=1",
    "random:widths=2-4,points=3,seed=2,encoding=01,loss=softmax,noise=gaussian",
    "random:widths=3-3,points=2,seed=3,noise=uniform",
]


@pytest.mark.parametrize("spec", ONE_HIDDEN)
@pytest.mark.parametrize("shared", [False, True])
def test_one_hidden_layer_is_exact_in_mean(spec, shared):
    """With one stochastic layer every flip is an exact head evaluation: the estimator is a function of
    the sampled states, and its probability-weighted mean over all states is the exact gradient."""
    p = build_problem(spec)
    est = LocalExpectation(shared=shared)
    mean = None
    for b in range(p.batch_size):
        pb = p.subset(slice(b, b + 1))
        path, prob = enumerate_paths(pb)
        grads = est.from_path(pb, path, None)
        mb = [(prob[:, None] * g).sum(0) / p.batch_size for g in grads]
        mean = mb if mean is None else [x + y for x, y in zip(mean, mb)]
    ex = exact(p).grads
    for name, m in zip(p.group_names, mean):
        assert torch.allclose(m, ex[name], atol=1e-13), name


def _reference_per_unit(problem, path):
    """Per-unit loop (test only): flip each unit, continue with the main path's own downstream uniforms."""
    law = problem.noise_law
    f = problem.loss_of(path.x[-1])
    grads = []
    for k in range(problem.depth):
        x, a = path.x[k], path.a[k]
        delta = torch.zeros_like(x)
        for i in range(x.shape[-1]):
            s = x.clone()
            s[..., i] = -s[..., i]
            for j in range(k + 1, problem.depth):
                aj = problem.preact(j, problem.enc(s))
                s = torch.where(path.u[j] < law.cdf(aj), 1.0, -1.0).to(aj.dtype)
            delta[..., i] = x[..., i] * law.pdf(a[..., i]) * (f - problem.loss_of(s))
        grads.append(layer_grad(delta, path.inputs[k]))
    return grads


@pytest.mark.parametrize("spec", ["random:widths=2-3-4-3,points=5,seed=4",
                                  "random:widths=2-3-2-3,points=4,seed=5,encoding=01,loss=softmax,noise=gaussian"])
def test_stacked_flips_match_a_per_unit_loop(spec, make_gen):
    p = build_problem(spec)
    path = sample_path(p, 6, make_gen(0))
    got = LocalExpectation(shared=True).from_path(p, path, None)
    want = _reference_per_unit(p, path)
    for g, w in zip(got[:-1], want):
        assert torch.allclose(g, w, atol=1e-13)
    # fresh downstream noise changes the hidden layers below the last one, never the last one or the head
    fresh = LocalExpectation(shared=False).from_path(p, path, make_gen(1))
    assert torch.allclose(fresh[-2], want[-1], atol=1e-13) and torch.equal(fresh[-1], got[-1])
    assert not torch.allclose(fresh[0], want[0])


def test_chunked_draws(monkeypatch, make_gen):
    p = build_problem("random:widths=2-3-3,points=4,seed=6")
    monkeypatch.setattr(local_expectation, "CHUNK_ELEMENTS", 4 * 3 * 3 * 7)  # 7 draws per chunk
    out = LocalExpectation().estimate(p, 30, make_gen(2))
    assert [tuple(v.shape) for v in out.values()] == [(30, s) for s in p.group_sizes]
    gen = make_gen(2)
    parts = [LocalExpectation().from_path(p, sample_path(p, c, gen), gen) for c in (7, 7, 7, 7, 2)]
    for name, g in zip(p.group_names, zip(*parts)):
        assert torch.equal(out[name], torch.cat(g))


def test_too_wide_problems_are_refused():
    p = build_problem("random:widths=2-300-300,points=800")
    with pytest.raises(InputError, match="local-expectation"):
        LocalExpectation().estimate(p, 1, torch.Generator().manual_seed(0))


def test_cost_counts_one_downstream_pass_per_hidden_unit():
    p = build_problem("random:widths=2-3-4-5,points=1")
    c = registry.get("local-expectation").cost(p)
    assert c.layer_evals == 3 + 3 * 2 + 4 * 1
    assert c.head_evals == 1 + 3 + 4 + 5
