r"""PSA's convolutional flip-difference backward through the fused FC kernels, and the automatic choice.

The same quantity as :func:`estimators.psa_conv.conv_flip_backward` (spec §3.8).  ``unfold`` turns
every output position $\ell$ of a data point into one row of a fully connected layer pair: the row's
inputs are the patch $X_{b,:,\ell}$ (``C_in K^2`` states, padding entries 0), its outputs the
``C_out`` channels at $\ell$, and its weights $W$ reshaped to ``[C_out, C_in K^2]``.  A fused FC
kernel computes $D^{\rm unf}_{b,q,\ell}=\sum_ch_{b,c,\ell}\big(F(a_{b,c,\ell})-F(a_{b,c,\ell}-\varsigma
W_{c,q}X_{b,q,\ell})\big)$ on these rows without materialising the ``[rows, C_in K^2, C_out]`` terms,
and ``fold`` sums the patches back onto the input map (contributions to padded positions are
dropped: padded inputs are constants, never flipped).  Samples are processed in chunks so that the
unfolded rows hold at most ``max_rows_elems`` elements.

- :func:`conv_flip_backward_fused` — rows through :func:`estimators.psa_kernel.flip_backward_fused`
  (a ``torch.compile``d ratio-form loop: C++/OpenMP on CPU, Triton on CUDA; falls back to the eager
  kernel for other noises or without a compiler).  The first call compiles (seconds).
- :func:`conv_flip_backward_cuda` — rows through the hand-written Triton kernel
  :func:`estimators.psa_kernel_cuda.flip_backward_cuda` (CUDA, float32, logistic; elsewhere it
  falls back to the blocked-torch ratio form).
- :func:`select_conv_flip_backward` — the automatic choice: Triton on CUDA where it applies, the
  compiled kernel on CUDA otherwise and on CPU for logistic noise, else the eager ratio convolution.

Unbiasedness is not affected (the same deterministic function of the path).  Cost: the
$N\,C_{in}K^2C_{out}H_oW_o$ terms of the layer's convolution, one reciprocal each (logistic), plus
``unfold``/``fold`` of the input map ($K^2$ times its size per chunk).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as nnf

from . import psa_kernel, psa_kernel_cuda
from .model import ConvGeom
from .noise import Logistic, Noise
from .psa_conv import check_conv, conv_flip_backward

__all__ = ["conv_flip_backward_fused", "conv_flip_backward_cuda", "conv_flip_backward_rows",
           "select_conv_flip_backward", "CONV_VARIANTS"]


def conv_flip_backward_rows(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, geom: ConvGeom,
                            noise: Noise, flip_scale: float, fc: Callable, max_rows_elems: int = 2**24,
                            max_chunk_elems: int = 2**24) -> torch.Tensor:
    """``D_in`` ``[D, B, C_in H W]`` through the FC kernel ``fc`` (signature of ``flip_backward``) on unfolded rows."""
    check_conv(x_in, a, W, h, geom)
    Dn, B = x_in.shape[:2]
    N, (C, H, Wd, K, s, p) = Dn * B, geom.as_array()
    c_out, q = W.shape[0], C * K * K
    ho, wo = geom.out_hw()
    P = ho * wo
    x4 = x_in.reshape(N, C, H, Wd)
    a3, h3 = a.reshape(N, c_out, P), h.reshape(N, c_out, P)
    Wm = W.reshape(c_out, q)
    out = torch.empty(N, C, H, Wd, dtype=a.dtype, device=a.device)
    step = max(1, int(max_rows_elems) // max(P * max(q, c_out), 1))  # samples per chunk
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        n = n1 - n0
        X = nnf.unfold(x4[n0:n1], K, padding=p, stride=s).transpose(1, 2).reshape(1, n * P, q)
        ar = a3[n0:n1].transpose(1, 2).reshape(1, n * P, c_out)
        hr = h3[n0:n1].transpose(1, 2).reshape(1, n * P, c_out)
        d = fc(X, ar, Wm, hr, noise, flip_scale, max_chunk_elems).reshape(n, P, q).transpose(1, 2)
        out[n0:n1] = nnf.fold(d, (H, Wd), K, padding=p, stride=s)
    return out.reshape(Dn, B, C * H * Wd)


def conv_flip_backward_fused(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, geom: ConvGeom,
                             noise: Noise, flip_scale: float, max_chunk_elems: int = 2**24) -> torch.Tensor:
    """Unfolded rows through the ``torch.compile``d FC ratio kernel (CPU or CUDA); see the module docstring."""
    return conv_flip_backward_rows(x_in, a, W, h, geom, noise, flip_scale, psa_kernel.flip_backward_fused,
                                   max_chunk_elems=max_chunk_elems)


def conv_flip_backward_cuda(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, geom: ConvGeom,
                            noise: Noise, flip_scale: float, max_chunk_elems: int = 2**24) -> torch.Tensor:
    """Unfolded rows through the Triton FC kernel (CUDA, float32, logistic; elsewhere its own fallbacks)."""
    return conv_flip_backward_rows(x_in, a, W, h, geom, noise, flip_scale, psa_kernel_cuda.flip_backward_cuda,
                                   max_chunk_elems=max_chunk_elems)


#: Variant name -> function (all with the signature of :func:`estimators.psa_conv.conv_flip_backward`).
CONV_VARIANTS: dict[str, Callable] = {
    "eager": conv_flip_backward,
    "fused": conv_flip_backward_fused,
    "cuda": conv_flip_backward_cuda,
}


def select_conv_flip_backward(device: str | torch.device, noise: Noise, dtype: torch.dtype = torch.float32) -> Callable:
    """The fastest available conv kernel for ``device``, ``noise`` and ``dtype``."""
    logistic = isinstance(noise, Logistic)
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        if logistic and dtype == torch.float32 and psa_kernel_cuda.triton_available():
            return conv_flip_backward_cuda
        return conv_flip_backward_fused if logistic else conv_flip_backward
    return conv_flip_backward_fused if logistic else conv_flip_backward
