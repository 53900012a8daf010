"""PSA for convolutional layers (``docs/estimators/psa.md#convolutional``): the ratio-convolution kernels
against the unfold reference,
the reference against the dense (fully connected) form of the same layer, and exact moments of PSA on
the enumerable ``conv-tiny`` network (unbiased for the last hidden layer and the head).

Tier 0 throughout (no randomness in the assertions).  The compiled kernel is checked on a few shapes
by default (one compilation per dtype) and on the whole stride x padding x kernel matrix under
``--run-slow``; the CUDA kernels run the whole matrix where CUDA is present (``gpu``).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from estimators import registry
from estimators.kernels import psa_fc
from estimators.errors import InputError
from estimators.model import ConvGeom
from estimators.model.noise import get_noise
from estimators.kernels.psa_conv import conv_flip_backward, conv_flip_backward_reference
from estimators.kernels.psa_conv_fused import (CONV_VARIANTS, conv_flip_backward_cuda, conv_flip_backward_fused,
                                       select_conv_flip_backward, conv_flip_backward_auto)
from estimators.kernels.psa_fc import flip_backward_reference
from reference.exact import exact
from reference.moments import path_moments
from reference.problems import build_problem

NOISES = ("logistic", "gaussian", "uniform")
#: (kernel, stride, padding) on a 7x6 map: odd and even extents, so a stride-2 window can miss the last row.
GEOMS = list(itertools.product((1, 3, 5), (1, 2), (0, 1)))


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one intra-op thread (see conftest.py)


def _inputs(geom: ConvGeom, c_out: int, dtype, gen, D=2, B=3, a_scale=3.0, w_scale=1.0):
    ho, wo = geom.out_hw()
    x = (torch.rand(D, B, geom.in_size, generator=gen) < 0.5).to(dtype) * 2 - 1
    W = torch.randn(c_out, geom.channels, geom.kernel, geom.kernel, generator=gen, dtype=dtype) * w_scale
    a = torch.randn(D, B, c_out * ho * wo, generator=gen, dtype=dtype) * a_scale
    h = torch.randn(D, B, c_out * ho * wo, generator=gen, dtype=dtype)
    return x, a, W, h


def _h_scale(h: torch.Tensor, geom: ConvGeom, c_out: int) -> float:
    """max_i sum over the (c, o, u) reaching input i of |h|: the size of the terms D_i sums (cancellation bound)."""
    ho, wo = geom.out_hw()
    m = h.abs().double().reshape(-1, c_out, ho, wo).sum(1, keepdim=True)
    ones = torch.ones(1, 1, geom.kernel, geom.kernel, dtype=torch.float64)
    reach = torch.nn.functional.conv_transpose2d(m, ones, None, geom.stride, geom.padding, geom.output_padding())
    return float(reach.max())


def _dense(W: torch.Tensor, geom: ConvGeom) -> torch.Tensor:
    """The layer's weights as an explicit ``[C_out*Ho*Wo, C_in*H*W]`` matrix (response to each unit input)."""
    eye = torch.eye(geom.in_size, dtype=W.dtype).reshape(-1, geom.channels, geom.height, geom.width)
    return torch.nn.functional.conv2d(eye, W, None, geom.stride, geom.padding).reshape(geom.in_size, -1).T


def _tol(dtype) -> float:
    return 1e-13 if dtype == torch.float64 else 4e-6


def _check_close(got, ref, h, geom, c_out, dtype):
    assert got.shape == ref.shape and got.dtype == dtype
    err = float((got.double() - ref.double()).abs().max())
    assert err <= _tol(dtype) * _h_scale(h, geom, c_out), err


# ---- the reference ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel, stride, padding", GEOMS)
@pytest.mark.parametrize("noise", NOISES)
def test_reference_equals_dense_fully_connected_form(kernel, stride, padding, noise, make_gen):
    """A conv layer is an FC layer with a structured weight matrix: the unfold reference equals the FC formula."""
    geom = ConvGeom(2, 7, 6, kernel, stride, padding)
    x, a, W, h = _inputs(geom, 3, torch.float64, make_gen(1))
    law = get_noise(noise)
    ref = conv_flip_backward_reference(x, a, W, h, geom, law, 2.0, max_chunk_elems=37)  # many small chunks
    dense = flip_backward_reference(x, a, _dense(W, geom), h, law, 2.0)
    assert float((ref - dense).abs().max()) <= 1e-13 * _h_scale(h, geom, 3)


# ---- the eager ratio convolution ---------------------------------------------------------------------------

@pytest.mark.parametrize("kernel, stride, padding", GEOMS)
@pytest.mark.parametrize("flip_scale", [2.0, 1.0], ids=["pm1", "01"])
def test_eager_equals_reference(kernel, stride, padding, flip_scale, dtype, make_gen):
    geom = ConvGeom(3, 7, 6, kernel, stride, padding)
    x, a, W, h = _inputs(geom, 4, dtype, make_gen(2))
    law = get_noise("logistic")
    ref = conv_flip_backward_reference(*(t.double() for t in (x, a, W, h)), geom, law, flip_scale)
    for chunk in (5, 2**22):  # tiles of a few rows, and one tile
        got = conv_flip_backward(x, a, W, h, geom, law, flip_scale, max_chunk_elems=chunk)
        _check_close(got, ref, h, geom, 4, dtype)


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 1), (5, 1, 1), (1, 2, 0)])
def test_eager_other_noises_evaluate_F_directly(noise, kernel, stride, padding, make_gen):
    geom = ConvGeom(2, 7, 6, kernel, stride, padding)
    x, a, W, h = _inputs(geom, 3, torch.float64, make_gen(3))
    law = get_noise(noise)
    ref = conv_flip_backward_reference(x, a, W, h, geom, law, 2.0)
    _check_close(conv_flip_backward(x, a, W, h, geom, law, 2.0, max_chunk_elems=9), ref, h, geom, 3, torch.float64)


def test_large_preactivations_and_weights_stay_finite(dtype, make_gen):
    """|a| up to ~180 and |sW| up to ~120: the clamped exponents never overflow; the result matches wherever
    the clamp is inactive in float64, and stays finite and close in float32 (saturated terms)."""
    geom = ConvGeom(2, 6, 6, 3, 2, 1)
    x, a, W, h = _inputs(geom, 3, dtype, make_gen(4), a_scale=60.0, w_scale=20.0)
    law = get_noise("logistic")
    ref = conv_flip_backward_reference(*(t.double() for t in (x, a, W, h)), geom, law, 2.0)
    for fn in (conv_flip_backward, conv_flip_backward_fused):
        got = fn(x, a, W, h, geom, law, 2.0)
        assert bool(torch.isfinite(got).all())
        # float64 clamps at 300, never reached here: the ratio form must then be exact.  float32 clamps at 40,
        # exact only while |a| and |sW| stay inside it (documented), so only finiteness is asserted there.
        if dtype == torch.float64:
            _check_close(got, ref, h, geom, 3, dtype)


def test_shapes_are_checked():
    geom = ConvGeom(2, 5, 5, 3, 1, 0)
    x, a, W, h = _inputs(geom, 3, torch.float64, torch.Generator().manual_seed(0))
    law = get_noise("logistic")
    for fn in (conv_flip_backward, conv_flip_backward_reference, conv_flip_backward_fused):
        with pytest.raises(InputError):
            fn(x[..., :-1], a, W, h, geom, law, 2.0)
        with pytest.raises(InputError):
            fn(x, a, W[:, :1], h, geom, law, 2.0)
        with pytest.raises(InputError):
            fn(x, a, W, h[..., :-1], geom, law, 2.0)


# ---- the compiled and CUDA kernels -------------------------------------------------------------------------

FUSED_DEFAULT = [(3, 1, 0), (3, 2, 1), (1, 1, 0), (5, 2, 0)]
FUSED_CASES = [pytest.param(*g, marks=[] if g in FUSED_DEFAULT else [pytest.mark.slow]) for g in GEOMS]


@pytest.mark.parametrize("kernel, stride, padding", FUSED_CASES)
def test_fused_equals_reference(kernel, stride, padding, dtype, make_gen):
    geom = ConvGeom(3, 7, 6, kernel, stride, padding)
    x, a, W, h = _inputs(geom, 4, dtype, make_gen(5))
    law = get_noise("logistic")
    ref = conv_flip_backward_reference(*(t.double() for t in (x, a, W, h)), geom, law, 2.0)
    # small row chunks: several samples per chunk and a partial last chunk
    got = conv_flip_backward_fused(x, a, W, h, geom, law, 2.0, max_rows_elems=2 * geom.kernel**2 * 3 * 42)
    _check_close(got, ref, h, geom, 4, dtype)
    _check_close(conv_flip_backward_cuda(x, a, W, h, geom, law, 2.0), ref, h, geom, 4, dtype)  # CPU: its fallbacks


def test_fused_other_noise_falls_back_to_eager(make_gen):
    geom = ConvGeom(2, 6, 5, 3, 2, 1)
    x, a, W, h = _inputs(geom, 3, torch.float64, make_gen(6))
    law = get_noise("gaussian")
    want = conv_flip_backward(x, a, W, h, geom, law, 1.0)
    assert torch.equal(conv_flip_backward_fused(x, a, W, h, geom, law, 1.0), want)


def test_auto_picks_by_layer_size(make_gen, monkeypatch):
    """CPU ``auto``: the eager kernel below ``AUTO_MIN_TERMS`` flip terms, the compiled one from there on."""
    geom = ConvGeom(3, 7, 6, 3, 2, 1)
    x, a, W, h = _inputs(geom, 4, torch.float32, make_gen(10))
    law = get_noise("logistic")
    assert torch.equal(conv_flip_backward_auto(x, a, W, h, geom, law, 2.0), conv_flip_backward(x, a, W, h, geom, law, 2.0))
    monkeypatch.setattr(psa_fc, "AUTO_MIN_TERMS", 1)
    monkeypatch.setattr(psa_fc, "AUTO_MIN_OUT", 1)
    assert torch.equal(conv_flip_backward_auto(x, a, W, h, geom, law, 2.0),
                       conv_flip_backward_fused(x, a, W, h, geom, law, 2.0))


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["fused", "cuda"])
@pytest.mark.parametrize("kernel, stride, padding", GEOMS)
@pytest.mark.parametrize("flip_scale", [2.0, 1.0], ids=["pm1", "01"])
def test_cuda_kernels_equal_reference(variant, kernel, stride, padding, flip_scale, dtype):
    gen = torch.Generator().manual_seed(7)
    geom = ConvGeom(16, 11, 10, kernel, stride, padding)
    x, a, W, h = _inputs(geom, 24, dtype, gen, D=2, B=4)
    law = get_noise("logistic")
    ref = conv_flip_backward_reference(*(t.double() for t in (x, a, W, h)), geom, law, flip_scale)
    got = CONV_VARIANTS[variant](*(t.cuda() for t in (x, a, W, h)), geom, law, flip_scale).cpu()
    _check_close(got, ref, h, geom, 24, dtype)


def test_automatic_choice():
    logistic, gauss = get_noise("logistic"), get_noise("gaussian")
    assert select_conv_flip_backward("cpu", logistic) is conv_flip_backward_auto
    assert select_conv_flip_backward("cpu", gauss) is conv_flip_backward_auto
    if torch.cuda.is_available():
        assert select_conv_flip_backward("cuda", logistic, torch.float32) in (conv_flip_backward_cuda,
                                                                              conv_flip_backward_fused)
        assert select_conv_flip_backward("cuda", logistic, torch.float64) is conv_flip_backward_fused


# ---- PSA on convolutional networks -------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["pm1", "01"])
def test_psa_exact_moments_on_conv_tiny(encoding):
    """Exact path enumeration (2^10 paths per point): unbiased for the last hidden layer and the head, while
    the first layer (flips passed up by the linearisation) is measurably biased."""
    p = build_problem(f"conv-tiny:encoding={encoding},seed=3").to(dtype=torch.float64)
    truth = exact(p).grads
    mom = path_moments(registry.get("psa"), p)
    for group in ("layer1", "head"):
        torch.testing.assert_close(mom[group][0], truth[group], rtol=1e-10, atol=1e-12)
    rel = float((mom["layer0"][0] - truth["layer0"]).norm() / truth["layer0"].norm())
    assert rel > 1e-4, rel  # conv-tiny's second layer mixes every first-layer unit into both of its units


def test_psa_fused_equals_eager_on_a_conv_network(make_gen):
    p = build_problem("conv:input=2x6x6,channels=3-4-2,kernels=3-3-1,strides=1-2-1,paddings=1-1-0,points=4,seed=2")
    p = p.to(dtype=torch.float64)
    eager = registry.get("psa").estimate(p, 3, make_gen(8))
    fused = registry.get("psa:kernel=fused").estimate(p, 3, make_gen(8))
    for g in p.group_names:
        torch.testing.assert_close(fused[g], eager[g], rtol=1e-10, atol=1e-12)
