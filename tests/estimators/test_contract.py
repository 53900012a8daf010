"""The estimator contract (``docs/estimators/index.md#contract``), parametrised over the whole registry.

Every registered estimator, with default hyperparameters, on small problems:
- returns ``{group: [D, size]}`` with the problem's group names, dtype and device, finite values;
- is reproducible under a fixed generator seed, and differs between seeds unless it is one of the
  documented deterministic estimators (:data:`DETERMINISTIC`);
- stays finite when pre-activations reach $|a|=50$ (float32 and float64, both encodings);
- runs for every declared encoding, noise and loss, and raises ``InputError`` for the others;
- if path-deterministic, equals its ``from_path`` evaluated on the path ``sample_path`` draws.
"""

from __future__ import annotations

import math

import pytest
import torch

from estimators import registry
from estimators.base import Cost
from estimators.errors import InputError
from estimators.model import sample_path
from reference.problems import random_problem

NAMES = registry.names()
ENCODINGS = ("pm1", "01")
NOISES = ("logistic", "gaussian", "uniform")
LOSSES = ("logistic", "softmax", "squared")
#: Estimators that use no randomness with their default hyperparameters (tanh mean-field; ADF with
#: its mean head).  Only for these may two generator seeds give identical estimates.
DETERMINISTIC = {"tanh", "adf"}
DRAWS = 3


def _cls(name):
    return registry.classes()[name]


def _problem(name, encoding=None, noise=None, loss=None, dtype=torch.float64, device="cpu", seed=0):
    cls = _cls(name)
    enc = encoding or cls.encodings[0]
    nz = noise or ("logistic" if "logistic" in cls.noises else cls.noises[0])
    ls = loss or ("softmax" if "softmax" in cls.losses else cls.losses[0])
    p = random_problem("3-4-3", scale=1.0, seed=seed, points=5, encoding=enc, noise=nz, loss=ls)
    return p.to(dtype=dtype, device=device)


def _estimate(name, p, seed, device="cpu", draws=DRAWS):
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return registry.get(name).estimate(p, draws, g)


def _assert_contract(p, out, draws=DRAWS):
    assert tuple(out) == p.group_names
    for (g, t), size in zip(out.items(), p.group_sizes):
        assert t.shape == (draws, size), g
        assert t.dtype == p.dtype and t.device == p.device, g
        assert bool(torch.isfinite(t).all()), g


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_output_contract(name, encoding, dtype, device):
    if encoding not in _cls(name).encodings:
        pytest.skip(f"{name} does not support {encoding} (checked in test_declared_support)")
    p = _problem(name, encoding=encoding, dtype=dtype, device=device)
    _assert_contract(p, _estimate(name, p, 0, device))
    c = registry.get(name).cost(p)
    assert isinstance(c, Cost)
    assert all(math.isfinite(v) and v >= 0 for v in (c.layer_evals, c.head_evals, c.backward_passes))


@pytest.mark.parametrize("name", NAMES)
def test_reproducible_and_seed_dependent(name):
    p = _problem(name)
    a, b, c = _estimate(name, p, 5), _estimate(name, p, 5), _estimate(name, p, 6)
    assert all(torch.equal(a[g], b[g]) for g in p.group_names)
    if all(torch.equal(a[g], c[g]) for g in p.group_names):
        assert name in DETERMINISTIC, f"{name}: two generator seeds gave identical estimates"


def _large_preactivation_problem(name, encoding, dtype):
    """Rescale every layer so that its largest reachable |pre-activation| is 60 (head |eta| too)."""
    p = _problem(name, encoding=encoding)
    reach0 = (p.preact(0, p.X)).abs().max()
    ws, bs = [p.weights[0] * 60 / reach0], [p.biases[0] * 60 / reach0]
    for w, b in zip(p.weights[1:], p.biases[1:]):
        r = (w.abs().sum(1) + b.abs()).max()
        ws.append(w * 60 / r)
        bs.append(b * 60 / r)
    rh = (p.head_weight.abs().sum(1) + p.head_bias.abs()).max()
    q = p.replace(weights=tuple(ws), biases=tuple(bs), head_weight=p.head_weight * 60 / rh,
                  head_bias=p.head_bias * 60 / rh)
    return q.to(dtype=dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_finite_at_large_preactivations(name, encoding, dtype, make_gen):
    if encoding not in _cls(name).encodings:
        pytest.skip(f"{name} does not support {encoding}")
    p = _large_preactivation_problem(name, encoding, dtype)
    path = sample_path(p, 8, make_gen(1))
    assert max(float(a.abs().max()) for a in path.a) >= 50  # the premise of the test
    _assert_contract(p, _estimate(name, p, 1, draws=8), draws=8)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("noise", NOISES)
def test_declared_support(name, encoding, noise):
    cls = _cls(name)
    p = _problem(name, encoding=encoding, noise=noise)
    if encoding in cls.encodings and noise in cls.noises:
        _assert_contract(p, _estimate(name, p, 2))
    else:
        with pytest.raises(InputError):
            _estimate(name, p, 2)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("loss", LOSSES)
def test_declared_losses(name, loss):
    p = _problem(name, loss=loss)
    if loss in _cls(name).losses:
        _assert_contract(p, _estimate(name, p, 3))
    else:
        with pytest.raises(InputError):
            _estimate(name, p, 3)


@pytest.mark.parametrize("name", NAMES)
def test_path_deterministic_estimate_is_from_path(name):
    est = registry.get(name)
    if not est.path_deterministic:
        pytest.skip(f"{name} is not path-deterministic")
    p = _problem(name)
    g = torch.Generator().manual_seed(9)
    want = est.from_path(p, sample_path(p, DRAWS, g))
    got = _estimate(name, p, 9)
    for name_g, w in zip(p.group_names, want):
        assert torch.equal(got[name_g], w)


@pytest.mark.parametrize("name", NAMES)
def test_bad_draws_and_declarations(name):
    d = _cls(name)().declarations()  # declarations are read from an instance (options may change them)
    assert isinstance(d["unbiased"], bool) and d["paths_per_draw"] >= 1 and _cls(name).summary
    with pytest.raises(InputError):
        _estimate(name, _problem(name), 0, draws=0)


# ---- convolutional networks: the same contract through the conv code paths
# (``docs/estimators/psa.md#convolutional``) ----------------------
#: stride 2 with padding then a 1x1 layer; and a 5x5 kernel with padding 1 then a 3x3 stride-1 layer
CONV_SPECS = ["conv:input=2x5x5,channels=2-3,kernels=3-1,strides=2-1,paddings=1-0,points=4,seed=1",
              "conv:input=1x6x5,channels=2-2,kernels=5-3,strides=1-1,paddings=1-0,points=3,seed=2"]


def _conv_problem(name, spec, encoding, dtype=torch.float64, scale=None, device="cpu"):
    from reference.problems import build_problem

    cls = _cls(name)
    nz = "logistic" if "logistic" in cls.noises else cls.noises[0]
    p = build_problem(f"{spec},encoding={encoding},noise={nz}" + (f",scale={scale}" if scale else ""))
    return p.to(dtype=dtype, device=device)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("spec", CONV_SPECS, ids=["s2p1-1x1", "k5p1-k3"])
def test_conv_output_contract(name, encoding, spec, dtype, device, one_thread):
    if encoding not in _cls(name).encodings:
        pytest.skip(f"{name} does not support {encoding}")
    p = _conv_problem(name, spec, encoding, dtype, device=device)
    assert p.is_conv
    _assert_contract(p, _estimate(name, p, 0, device))
    est = registry.get(name)
    if est.path_deterministic:
        want = est.from_path(p, sample_path(p, DRAWS, torch.Generator(device=device).manual_seed(0)))
        got = _estimate(name, p, 0, device)
        for name_g, w in zip(p.group_names, want):
            assert torch.equal(got[name_g], w)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_conv_finite_at_large_preactivations(name, encoding, dtype, one_thread):
    if encoding not in _cls(name).encodings:
        pytest.skip(f"{name} does not support {encoding}")
    p = _conv_problem(name, CONV_SPECS[0], encoding, dtype, scale=60)
    path = sample_path(p, 8, torch.Generator().manual_seed(1))
    assert max(float(a.abs().max()) for a in path.a) >= 50  # the premise of the test
    _assert_contract(p, _estimate(name, p, 1, draws=8), draws=8)


# ---- declared unbiased groups (``docs/gate.md#design``: the gate z-tests exactly these) -------------------

#: What theory makes unbiased for the biased families: PSA's last hidden layer and head (its last-layer
#: flips are exact), the straight-through family's head (pathwise at the sampled states).
EXPECTED_GROUPS = {"psa": 2, "psa:head=flip-mixed": 2, "st": 1, "st-identity": 1,
                   "st-tanh": 1, "st-hardtanh": 1}


@pytest.mark.parametrize("spec", sorted(set(n for n in NAMES if _cls(n).path_deterministic) | set(EXPECTED_GROUPS)))
@pytest.mark.parametrize("widths,encoding,noise,loss", [("2-3-3-2", "pm1", "logistic", "softmax"),
                                                        ("2-2-3", "01", "gaussian", "logistic")])
def test_declared_unbiased_groups_are_exactly_unbiased(spec, widths, encoding, noise, loss):
    """Every group an estimator declares unbiased has an exact mean (path enumeration) equal to the exact
    gradient; the biased families declare the groups theory makes unbiased, and no more on a deep network
    (the undeclared groups are visibly biased, so a declaration too wide would be caught by this test)."""
    from reference.exact import exact
    from reference.moments import path_moments

    est = registry.get(spec)
    p = random_problem(widths, scale=2.0, seed=3, points=3, encoding=encoding, noise=noise, loss=loss)
    try:
        est.check(p)
    except InputError:
        pytest.skip(f"{spec} does not support {encoding}/{noise}/{loss}")
    declared = est.unbiased_groups(p)
    mom, ex = path_moments(est, p), exact(p).grads
    for g in declared:
        assert float((mom[g][0] - ex[g]).abs().max()) <= 1e-10 * (1 + float(ex[g].norm())), (spec, g)
    if spec in EXPECTED_GROUPS:
        assert tuple(declared) == tuple(p.group_names[-EXPECTED_GROUPS[spec]:])
        for g in set(p.group_names) - set(declared):
            assert float((mom[g][0] - ex[g]).norm()) > 1e-4 * float(ex[g].norm()), (spec, g)
