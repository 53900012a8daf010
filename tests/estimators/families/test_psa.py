"""PSA: the flip kernel, exact unbiasedness where the spec says so, bias where it does not, the
backward recursion against a per-pair evaluation, and the flip-mixed head (``docs/estimators/psa.md``; claims
3-5, 9, 10 of ``docs/protocols.md#claims``).

Everything here is Tier 0 (exact path enumeration, no randomness in the assertions)."""

from __future__ import annotations

import math

import pytest
import torch

from estimators import registry
from estimators.kernels import psa_fc
from estimators.errors import InputError
from estimators.model import sample_path
from estimators.model.noise import get_noise
from estimators.kernels.psa_fc import flip_backward, flip_backward_fused, flip_backward_reference
from reference.exact import exact
from reference.moments import path_moments
from reference.problems import random_problem

NOISES = ("logistic", "gaussian", "uniform")


def _rel_err(mean: torch.Tensor, truth: torch.Tensor) -> float:
    return float((mean - truth).norm() / truth.norm().clamp_min(1e-300))


# ---- kernel ----------------------------------------------------------------------------------------

def _kernel_inputs(dtype, gen, D=3, B=5, n_in=6, n_out=7, a_scale=3.0):
    x = (torch.rand(D, B, n_in, generator=gen) < 0.5).to(dtype) * 2 - 1
    a = torch.randn(D, B, n_out, generator=gen, dtype=dtype) * a_scale
    W = torch.randn(n_out, n_in, generator=gen, dtype=dtype)
    h = torch.randn(D, B, n_out, generator=gen, dtype=dtype)
    return x, a, W, h


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("flip_scale", [2.0, 1.0])
@pytest.mark.parametrize("chunk", [1, 7, 64, 2**22])
def test_kernel_equals_reference(noise, flip_scale, chunk, dtype, make_gen):
    x, a, W, h = _kernel_inputs(dtype, make_gen(11))
    law = get_noise(noise)
    got = flip_backward(x, a, W, h, law, flip_scale, max_chunk_elems=chunk)
    ref = flip_backward_reference(*(t.double() for t in (x, a, W, h)), law, flip_scale)
    assert got.shape == x.shape and got.dtype == dtype
    # float32: the easy/hard split loses up to eps * sum_j |h_j| to cancellation.
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    scale = float(h.abs().sum(-1).max())
    assert float((got.double() - ref).abs().max()) <= tol * scale


def test_kernel_reference_matches_definition(make_gen):
    """The reference itself against a scalar evaluation of D_i = sum_j h_j (F(a_j) - F(a_j - s W_ji x_i))."""
    x, a, W, h = _kernel_inputs(torch.float64, make_gen(3), D=1, B=2, n_in=3, n_out=4)
    law = get_noise("logistic")
    ref = flip_backward_reference(x, a, W, h, law, 2.0)
    sig = lambda t: 1.0 / (1.0 + math.exp(-t))  # noqa: E731
    for b in range(2):
        for i in range(3):
            want = sum(float(h[0, b, j]) * (sig(float(a[0, b, j])) - sig(float(a[0, b, j] - 2 * W[j, i] * x[0, b, i])))
                       for j in range(4))
            assert abs(float(ref[0, b, i]) - want) < 1e-14


def test_kernel_large_preactivations_finite(dtype, make_gen):
    x, a, W, h = _kernel_inputs(dtype, make_gen(5), a_scale=60.0)
    W = W * 30
    for noise in NOISES:
        got = flip_backward(x, a, W, h, get_noise(noise), 2.0, max_chunk_elems=16)
        assert bool(torch.isfinite(got).all())
        ref = flip_backward_reference(*(t.double() for t in (x, a, W, h)), get_noise(noise), 2.0)
        assert float((got.double() - ref).abs().max()) <= 2e-6 * float(h.abs().sum(-1).max())


def test_kernel_rejects_bad_shapes():
    law = get_noise("logistic")
    x, a, h = torch.ones(1, 2, 3), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)
    with pytest.raises(InputError):
        flip_backward(x, a, torch.zeros(3, 4), h, law, 2.0)
    with pytest.raises(InputError):
        flip_backward(x[0], a[0], torch.zeros(4, 3), h[0], law, 2.0)


@pytest.mark.slow
@pytest.mark.parametrize("flip_scale", [2.0, 1.0])
def test_fused_kernel_equals_reference(flip_scale, dtype, make_gen, monkeypatch):
    """The compiled pair form (first call compiles: seconds): blocks of units, rows and outputs, an odd
    n_out, outputs padded to whole vectors, saturated pre-activations, the largest weights inside the
    range, and h of any scale."""
    law = get_noise("logistic")
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    wmax = psa_fc._RANGES[dtype][1] / flip_scale
    cases = [  # (n_out, a_scale, weight scale, h scale, table elems, row elems, outputs per pass, pad unit)
        (17, 3.0, 1.0, 1.0, 2**18, 2**17, 1024, 2), (16, 3.0, 1.0, 1e6, 40, 40, 6, 2),
        (17, 30.0, 1.0, 1e-20, 64, 100, 7, 2), (17, 60.0, wmax, 1.0, 2**18, 2**17, 4, 2),
        (9, 3.0, wmax, 1.0, 30, 20, 1024, 2), (17, 3.0, 1.0, 1.0, 2**18, 2**17, 1024, 8),
        (21, 3.0, wmax, 1.0, 50, 40, 12, 8),
    ]
    for n_out, a_scale, wscale, hscale, table, rows, jblock, lanes in cases:
        monkeypatch.setattr(psa_fc, "_TABLE", table)
        monkeypatch.setattr(psa_fc, "_ROWS", rows)
        monkeypatch.setattr(psa_fc, "_JBLOCK", jblock)
        monkeypatch.setattr(psa_fc, "_LANES", lanes)
        monkeypatch.setattr(psa_fc, "_PAD_MIN", 1)
        x, a, W, h = _kernel_inputs(dtype, make_gen(7), D=2, B=9, n_in=33, n_out=n_out, a_scale=a_scale)
        W = W / W.abs().max() * wscale  # the largest |W| exactly at the scale
        h = h * hscale
        assert psa_fc.fused_supported(W, law, flip_scale, dtype)
        got = flip_backward_fused(x, a, W, h, law, flip_scale)
        ref = flip_backward_reference(*(t.double() for t in (x, a, W, h)), law, flip_scale)
        assert got.shape == x.shape and got.dtype == dtype
        assert float((got.double() - ref).abs().max()) <= tol * float(h.abs().sum(-1).max()), (n_out, a_scale, wscale)
    if psa_fc._compiled.get("broken"):
        pytest.skip("torch.compile is unavailable here; the fused kernel fell back to the eager one")


@pytest.mark.parametrize("shape", [(1, 3, 4, 0), (1, 0, 4, 5), (1, 3, 0, 5), (2, 3, 1, 1), (1, 2, 3, 2)])
def test_fused_kernel_degenerate_shapes(shape, make_gen):
    """No outputs (D = 0), no rows, no inputs, one output (odd: padded to a pair), two outputs."""
    D, B, n_in, n_out = shape
    x, a, W, h = _kernel_inputs(torch.float32, make_gen(12), D=D, B=B, n_in=n_in, n_out=n_out)
    law = get_noise("logistic")
    got = flip_backward_fused(x, a, W, h, law, 2.0)
    ref = flip_backward_reference(*(t.double() for t in (x, a, W, h)), law, 2.0)
    assert got.shape == (D, B, n_in)
    err = float((got.double() - ref).abs().amax()) if got.numel() else 0.0
    assert err <= 2e-6 * (1 + (float(h.abs().sum(-1).amax()) if h.numel() else 0.0))


def test_fused_kernel_beyond_the_recompile_limit_runs_eager(monkeypatch):
    """A new input pattern once the compiled graphs are used up: this call goes to the eager kernel (never
    an unfused eager run of the pair expression, whose temporaries are [rows, n_in_block, n_out]); later
    calls are not affected."""
    law = get_noise("logistic")
    g = torch.Generator().manual_seed(13)
    x, a, W, h = torch.ones(1, 1, 1), torch.randn(1, 1, 2, generator=g), torch.full((2, 1), 0.3), torch.randn(1, 1, 2, generator=g)
    monkeypatch.setattr(psa_fc, "_RECOMPILE_LIMIT", 0)
    assert torch.equal(flip_backward_fused(x, a, W, h, law, 2.0), flip_backward(x, a, W, h, law, 2.0))
    assert not psa_fc._compiled.get("broken")


def test_fused_kernel_falls_back_outside_its_range(dtype, make_gen):
    """Weights beyond the exact range, another noise or dtype: the eager kernel's result, bit for bit."""
    x, a, W, h = _kernel_inputs(dtype, make_gen(8))
    law = get_noise("logistic")
    big = W / W.abs().max() * (psa_fc._RANGES[dtype][1] / 2.0 * 1.01)
    assert not psa_fc.fused_supported(big, law, 2.0, dtype)
    assert torch.equal(flip_backward_fused(x, a, big, h, law, 2.0), flip_backward(x, a, big, h, law, 2.0))
    gauss = get_noise("gaussian")
    assert not psa_fc.fused_supported(W, gauss, 2.0, dtype)
    assert torch.equal(flip_backward_fused(x, a, W, h, gauss, 2.0), flip_backward(x, a, W, h, gauss, 2.0))
    assert not psa_fc.fused_supported(W.half(), law, 2.0, torch.float16)


def test_automatic_cpu_choice_by_size_noise_and_range(make_gen):
    """Small layers stay eager (no compile); large ones in range get the compiled kernel."""
    law, gauss = get_noise("logistic"), get_noise("gaussian")
    x, a, W, h = _kernel_inputs(torch.float32, make_gen(9))
    big = psa_fc.AUTO_MIN_TERMS
    wide = psa_fc.AUTO_MIN_OUT
    assert psa_fc.cpu_choice(big - 1, wide, W, law, 2.0, torch.float32) is flip_backward
    assert psa_fc.cpu_choice(big, wide - 1, W, law, 2.0, torch.float32) is flip_backward
    assert psa_fc.cpu_choice(big, wide, W, law, 2.0, torch.float32) is flip_backward_fused
    assert psa_fc.cpu_choice(big, wide, W, gauss, 2.0, torch.float32) is flip_backward
    assert psa_fc.cpu_choice(big, wide, W * 100, law, 2.0, torch.float32) is flip_backward
    assert torch.equal(psa_fc.flip_backward_auto(x, a, W, h, law, 2.0), flip_backward(x, a, W, h, law, 2.0))


# ---- exact unbiasedness (``docs/estimators/psa.md#bias``; claims 3, 4)
# ---------------------------------------------------

@pytest.mark.parametrize("loss", ["logistic", "softmax", "squared"])
@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("encoding", ["pm1", "01"])
def test_unbiased_one_hidden_layer(encoding, noise, loss):
    p = random_problem("3-4", scale=1.5, seed=2, points=3, encoding=encoding, noise=noise, loss=loss)
    ex = exact(p)
    mom = path_moments(registry.get("psa"), p)
    for g in p.group_names:
        assert float((mom[g][0] - ex.grads[g]).abs().max()) <= 1e-10 * (1 + float(ex.grads[g].norm()))


@pytest.mark.parametrize("widths", ["2-3-3", "2-3-2-3"])
@pytest.mark.parametrize("encoding,noise", [("pm1", "logistic"), ("01", "logistic"), ("pm1", "gaussian")])
def test_deep_unbiased_last_hidden_and_head_biased_first(widths, encoding, noise):
    p = random_problem(widths, scale=2.0, seed=4, points=4, encoding=encoding, noise=noise, loss="softmax")
    ex = exact(p)
    mom = path_moments(registry.get("psa"), p)
    for g in p.group_names[-2:]:  # last hidden layer and head
        assert float((mom[g][0] - ex.grads[g]).abs().max()) <= 1e-10 * (1 + float(ex.grads[g].norm()))
    # the first layer is biased: the linearisation of step C is visible far above rounding
    assert _rel_err(mom["layer0"][0], ex.grads["layer0"]) > 1e-3


def test_bias_grows_with_weight_scale():
    """``docs/estimators/psa.md#bias`` / claim 9: first-layer exact relative bias of PSA and deep ST grows with
    the hidden scale.

    Random 2-3-3-3 networks (hidden weights and biases N(0, s^2), head N(0, 1)); for each seed the
    networks at different s are scaled copies.  The geometric mean over 5 seeds must increase with s,
    and PSA's must stay below deep ST's.
    """
    scales, seeds = (0.5, 1.0, 2.0), range(5)
    logs = {"psa": [], "st": []}
    for s in scales:
        acc = {"psa": 0.0, "st": 0.0}
        for seed in seeds:
            p = random_problem("2-3-3-3", scale=s, seed=seed, points=8)
            g = exact(p).grads["layer0"]
            for name in acc:
                acc[name] += math.log(_rel_err(path_moments(registry.get(name), p)["layer0"][0], g))
        for name in acc:
            logs[name].append(acc[name] / len(seeds))
    for name, v in logs.items():
        assert v[0] < v[1] < v[2], (name, [math.exp(t) for t in v])
    assert all(a < b for a, b in zip(logs["psa"], logs["st"])), logs


# ---- the recursion against an independent per-pair evaluation (claim 5) ---------------------------

def _direct_psa_layers(p, path):
    """``docs/estimators/psa.md#algorithm`` evaluated pair by pair with Python scalars: layer gradients [D, size]."""
    F, dF = p.noise_law.cdf, p.noise_law.pdf
    s, L = p.flip_scale, p.depth
    Dn, B = path.x[0].shape[:2]
    out = [torch.zeros(Dn, w.numel() + b.numel(), dtype=torch.float64) for w, b in zip(p.weights, p.biases)]
    for d in range(Dn):
        for b in range(B):
            sub = p.subset(slice(b, b + 1))
            xs = [path.x[k][d, b] for k in range(L)]
            As = [path.a[k][d, b] for k in range(L)]
            xL, nL = xs[-1], xs[-1].shape[0]
            f0 = float(sub.loss_of(xL.view(1, 1, -1)))
            Dk = []
            for i in range(nL):
                xf = xL.clone()
                xf[i] = -xf[i]
                Dk.append(f0 - float(sub.loss_of(xf.view(1, 1, -1))))
            for k in range(L - 1, -1, -1):
                delta = [float(xs[k][i] * dF(As[k][i])) * Dk[i] for i in range(len(Dk))]
                inp = path.inputs[k][d, b] if k else p.X[b]
                n, m = p.weights[k].shape
                for i in range(n):
                    for c in range(m):
                        out[k][d, i * m + c] += delta[i] * float(inp[c]) / B
                    out[k][d, n * m + i] += delta[i] / B
                if k:
                    W, x_in, a = p.weights[k], xs[k - 1], As[k]
                    Dk = [sum(float(xs[k][j]) * float(F(a[j]) - F(a[j] - s * W[j, i] * x_in[i])) * Dk[j]
                              for j in range(n)) for i in range(m)]
    return out


@pytest.mark.parametrize("encoding,noise", [("pm1", "logistic"), ("01", "logistic"), ("01", "uniform")])
def test_backward_equals_per_pair_recursion(encoding, noise, make_gen):
    p = random_problem("2-3-4-3", scale=1.5, seed=9, points=3, encoding=encoding, noise=noise, loss="softmax")
    path = sample_path(p, 2, make_gen(1))
    got = registry.get("psa").from_path(p, path)
    want = _direct_psa_layers(p, path)
    for k in range(p.depth):
        assert float((got[k] - want[k]).abs().max()) <= 1e-13 * (1 + float(want[k].abs().max()))


# ---- flip-mixed head (``docs/estimators/psa.md#flip-mixed-head``; claim 10)
# ---------------------------------------------------------

@pytest.mark.parametrize("widths,loss", [("2-3-3", "softmax"), ("3-4", "logistic"), ("2-2-3", "squared")])
def test_flip_mixed_head_unbiased_lower_variance(widths, loss):
    p = random_problem(widths, scale=1.5, seed=6, points=4, loss=loss)
    ex = exact(p)
    plain = path_moments(registry.get("psa"), p)
    mixed = path_moments(registry.get("psa:head=flip-mixed"), p)
    assert float((mixed["head"][0] - ex.grads["head"]).abs().max()) <= 1e-10 * (1 + float(ex.grads["head"].norm()))
    assert float(mixed["head"][1].sum()) < float(plain["head"][1].sum())
    for g in p.group_names[:-1]:  # hidden gradients are those of plain PSA
        assert torch.equal(mixed[g][0], plain[g][0]) and torch.equal(mixed[g][1], plain[g][1])


def test_flip_mixed_hidden_layers_identical_per_path(make_gen):
    p = random_problem("2-3-3", scale=1.0, seed=1, points=5, encoding="01")
    path = sample_path(p, 4, make_gen(2))
    a = registry.get("psa").from_path(p, path)
    b = registry.get("psa:head=flip-mixed").from_path(p, path)
    assert all(torch.equal(u, v) for u, v in zip(a[:-1], b[:-1]))
    assert not torch.equal(a[-1], b[-1])


def test_hyperparameters_validated():
    with pytest.raises(InputError):
        registry.get("psa:head=mixed")
    with pytest.raises(InputError):
        registry.get("psa:kernel=gpu")


def test_cost_counts_last_layer_flips():
    p = random_problem("2-5-5-7", points=2)
    c = registry.get("psa").cost(p)
    assert (c.layer_evals, c.head_evals, c.backward_passes) == (3, 8, 1)
