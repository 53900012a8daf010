"""The fused PSA FC kernel (Triton on CUDA) and its blocked torch mirror equal the naive reference.

CPU: the ratio-form torch path (the kernel's math: clamps, precomputed E+-, blocks) and the
dispatch.  CUDA (``gpu`` marker, skipped without CUDA): the Triton kernel itself, including a
split over j and ragged tiles.  With Triton installed but no GPU, the kernel also runs in Triton's
CPU interpreter (a subprocess with ``TRITON_INTERPRET=1``); skipped when Triton is absent.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from estimators.kernels import psa_fc
from estimators.model.noise import get_noise
from estimators.kernels.psa_fc_cuda import flip_backward_cuda, flip_backward_ratio, select_flip_backward, triton_available


def _inputs(R, n_in, n_out, dtype, device, seed=0, scale=1.0, saturate=False):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = (torch.randint(0, 2, (1, R, n_in), generator=g) * 2 - 1).to(dtype)
    W = torch.randn(n_out, n_in, generator=g, dtype=dtype) * scale
    a = torch.randn(1, R, n_out, generator=g, dtype=dtype) * 3 * scale
    h = torch.randn(1, R, n_out, generator=g, dtype=dtype)
    if saturate:  # |a| or |sW| beyond the float32 clamp of 40 (not both: see the module's numerics note)
        a[0, 0, 0], a[0, -1, 1], W[-1, -1] = 60.0, -70.0, 30.0
    return [t.to(device) for t in (x, a, W, h)]


def _reference(x, a, W, h, noise, s):
    return psa_fc.flip_backward_reference(x.double(), a.double(), W.double(), h.double(), noise, s)


@pytest.mark.parametrize("noise_name", ["logistic", "gaussian"])
@pytest.mark.parametrize("s", [2.0, 1.0])
@pytest.mark.parametrize("chunk", [2**22, 2 * 19 * 5])  # one block, and E+- blocks of 5 inputs
def test_ratio_form_equals_reference(noise_name, s, chunk, dtype):
    noise = get_noise(noise_name)
    x, a, W, h = _inputs(7, 13, 19, dtype, "cpu", saturate=noise_name == "logistic")
    got = flip_backward_ratio(x, a, W, h, noise, s, max_chunk_elems=chunk)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    assert got.dtype == dtype and got.shape == x.shape and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), _reference(x, a, W, h, noise, s), **tol)


def test_cuda_entry_point_falls_back_on_cpu():
    noise = get_noise("logistic")
    x, a, W, h = _inputs(5, 6, 9, torch.float32, "cpu")
    torch.testing.assert_close(flip_backward_cuda(x, a, W, h, noise, 2.0).double(), _reference(x, a, W, h, noise, 2.0),
                               rtol=1e-5, atol=1e-5)
    assert select_flip_backward("cpu", noise) is psa_fc.flip_backward_auto
    with pytest.raises(ValueError):
        flip_backward_cuda(x, a[..., :-1], W, h, noise, 2.0)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(5, 7, 9), (300, 130, 257), (256, 512, 512), (64, 1000, 2048)])
def test_triton_kernel_equals_reference_on_cuda(shape):
    noise = get_noise("logistic")
    x, a, W, h = _inputs(*shape, torch.float32, "cuda", seed=sum(shape), saturate=True)
    W[-1, -1] = 8.5  # the largest weight at the edge of the exact range (s max|W| = 17): the kernel runs
    assert psa_fc.in_exact_range(W, 2.0, torch.float32)
    assert select_flip_backward("cuda", noise) is (flip_backward_cuda if triton_available() else psa_fc.flip_backward_fused)
    got = flip_backward_cuda(x, a, W, h, noise, 2.0)
    want = _reference(x.cpu(), a.cpu(), W.cpu(), h.cpu(), noise, 2.0)
    assert got.is_cuda and torch.isfinite(got).all()
    scale = want.abs().max().item() + 1.0
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-4, atol=1e-5 * scale)
    small = flip_backward_cuda(x, a, W, h, noise, 2.0, max_chunk_elems=2 * shape[2] * 3)  # many input blocks
    torch.testing.assert_close(small, got, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.gpu
def test_cuda_entry_point_falls_back_beyond_the_exact_range():
    """|a| = 100 with s W = 90 cancelling: the clamped kernel would give 0.5; the eager kernel is exact."""
    noise = get_noise("logistic")
    x, a, W, h = _inputs(4, 3, 5, torch.float32, "cuda")
    x[0, 0, 0], W[0, 0], a[0, 0, 0] = 1.0, 45.0, 100.0
    assert not psa_fc.in_exact_range(W, 2.0, torch.float32)
    got = flip_backward_cuda(x, a, W, h, noise, 2.0)
    torch.testing.assert_close(got, psa_fc.flip_backward(x, a, W, h, noise, 2.0))
    want = _reference(x.cpu(), a.cpu(), W.cpu(), h.cpu(), noise, 2.0)
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_cuda_float64_and_other_noises_use_the_torch_paths():
    for noise_name, dtype in (("logistic", torch.float64), ("gaussian", torch.float32)):
        noise = get_noise(noise_name)
        x, a, W, h = _inputs(9, 11, 13, dtype, "cuda")
        got = flip_backward_cuda(x, a, W, h, noise, 2.0)
        want = _reference(x.cpu(), a.cpu(), W.cpu(), h.cpu(), noise, 2.0)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got.double().cpu(), want, **tol)


_INTERPRET = """
import torch
from estimators.kernels import psa_fc_cuda as K
from estimators.kernels.psa_fc import flip_backward_reference
from estimators.model.noise import get_noise
built = K._build_kernel()
assert built is not None
g = torch.Generator().manual_seed(0)
for R, n_in, n_out, chunk, sms in [(5, 7, 9, 2**22, 1), (70, 70, 300, 2**22, 132), (33, 65, 129, 2 * 129 * 16, 8)]:
    x = (torch.randint(0, 2, (R, n_in), generator=g) * 2 - 1).float()
    W = torch.randn(n_out, n_in, generator=g) * 3
    a = torch.randn(R, n_out, generator=g) * 5
    a[0, 0], W[-1, -1] = 60.0, 30.0
    h = torch.randn(R, n_out, generator=g)
    hard = K._triton_hard(built, x, a, W, h, 2.0, chunk, sms)
    out = (h * torch.sigmoid(a)).sum(-1, keepdim=True) - hard
    ref = flip_backward_reference(x[None].double(), a[None].double(), W.double(), h[None].double(), get_noise("logistic"), 2.0)[0]
    err = float((out.double() - ref).abs().max())
    assert err < 1e-4 * (1 + float(ref.abs().max())), (R, n_in, n_out, err)
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_triton_kernel_in_the_cpu_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", _INTERPRET], capture_output=True, text=True, timeout=300, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
