r"""PSA's convolutional flip-difference backward through fused kernels, and the automatic choice.

The same quantity as :func:`estimators.kernels.psa_conv.conv_flip_backward`
(``docs/estimators/psa.md#convolutional``).  Every output
position $(b,o)$ becomes one row of a fully connected layer pair: the row's inputs are the patch
that position reads, gathered channels-last from the zero-padded input (``K*K*C_in`` states in
(offset, channel) order; padded entries are 0), its outputs the ``C_out`` channels at $o$, its
weights $W$ permuted to ``[C_out, K*K*C_in]``.  An FC flip kernel evaluates every row (easy minus
hard part, nothing ``[rows, K*K*C_in, C_out]``-sized is materialised); the $K^2$ offset slices of the
row results are then added into the padded input grid (strided windows: the stride needs no zero
insertion), whose border is cropped (padded inputs are constants, never flipped).  Samples are
processed in chunks whose gathered rows hold at most ``max_rows_elems`` elements.

- :func:`conv_flip_backward_fused` — the rows through the compiled pair kernel
  :func:`estimators.kernels.psa_fc.flip_backward_fused` (C++/OpenMP on CPU, Triton through inductor on
  CUDA; one division per two terms).  Inputs it does not evaluate itself (other noises or dtypes,
  weights beyond its exact range, no compiler) go to the eager
  :func:`~estimators.kernels.psa_conv.conv_flip_backward`.  The first call compiles (seconds).
- :func:`conv_flip_backward_cuda` — the rows through the hand-written Triton FC kernel
  :func:`estimators.kernels.psa_fc_cuda.flip_backward_cuda` (CUDA, float32, logistic; elsewhere its
  own fallbacks).
- :func:`conv_flip_backward_auto` — the CPU choice (:func:`conv_auto_choice`): fused for large layers,
  eager for small ones (:func:`estimators.kernels.psa_fc.cpu_choice`).
- :func:`select_conv_flip_backward` — the automatic choice: Triton on CUDA where it applies, the
  compiled kernel for logistic noise on CUDA otherwise, :func:`conv_flip_backward_auto` on CPU.

Unbiasedness is not affected (the same deterministic function of the path).  Cost: the
$N\,C_{in}K^2C_{out}H_oW_o$ terms of the layer's convolution, one division each, plus gathering the
patches and adding them back ($K^2$ times the input map, per chunk).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as nnf

from ..model import ConvGeom
from ..model.noise import Logistic, Noise
from . import psa_fc, psa_fc_cuda
from .psa_conv import check_conv, conv_flip_backward

__all__ = ["conv_flip_backward_fused", "conv_flip_backward_cuda", "conv_flip_backward_auto", "conv_auto_choice",
           "select_conv_flip_backward",
           "CONV_VARIANTS"]


def _patch_sums(x_in: torch.Tensor, geom: ConvGeom, dtype: torch.dtype, max_rows_elems: int,
                row_fn: Callable[[torch.Tensor, int, int], torch.Tensor]) -> torch.Tensor:
    r"""$\sum$ over patches of ``row_fn(X, n0, n1)`` (``[n*P, K*K*C_in]`` values per patch entry): ``[N, C_in, H, W]``.

    ``X`` holds the gathered patches of samples ``n0:n1`` (rows position-major, columns (offset, channel)).
    """
    N = x_in.shape[0] * x_in.shape[1]
    C, H, Wd, K, s, p = geom.as_array()
    ho, wo = geom.out_hw()
    P, q = ho * wo, K * K * C
    xcl = nnf.pad(x_in.reshape(N, C, H, Wd), (p, p, p, p)).permute(0, 2, 3, 1)  # [N, Hp, Wp, C]
    acc = torch.zeros(N, H + 2 * p, Wd + 2 * p, C, dtype=dtype, device=x_in.device)
    step = max(1, int(max_rows_elems) // max(P * q, 1))
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        n = n1 - n0
        X = xcl[n0:n1].unfold(1, K, s).unfold(2, K, s).permute(0, 1, 2, 4, 5, 3).reshape(n * P, q)
        vals = row_fn(X, n0, n1).reshape(n, ho, wo, K, K, C)
        for du in range(K):
            for dv in range(K):
                acc[n0:n1, du:du + s * (ho - 1) + 1:s, dv:dv + s * (wo - 1) + 1:s] += vals[:, :, :, du, dv]
    return acc[:, p:p + H, p:p + Wd].permute(0, 3, 1, 2)


def conv_flip_backward_fused(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, geom: ConvGeom,
                             noise: Noise, flip_scale: float, max_chunk_elems: int = 2**22,
                             max_rows_elems: int = 2**24) -> torch.Tensor:
    """The rows through the compiled FC pair kernel :func:`estimators.kernels.psa_fc.flip_backward_fused`
    (easy minus hard per row, summed into the input grid); returns ``[D, B, C_in H W]``.

    Inputs that kernel does not evaluate itself (other noises or dtypes, weights beyond its exact
    range, no compiler) go to the eager ratio convolution instead of an eager row kernel (faster).
    """
    check_conv(x_in, a, W, h, geom)
    if not psa_fc.fused_supported(W, noise, flip_scale, a.dtype):
        return conv_flip_backward(x_in, a, W, h, geom, noise, flip_scale, max_chunk_elems)
    return _via_rows(psa_fc._fused_in_range, x_in, a, W, h, geom, noise, flip_scale, max_chunk_elems,
                     max_rows_elems)


def _via_rows(fc_kernel: Callable, x_in, a, W, h, geom: ConvGeom, noise: Noise, flip_scale: float,
              max_chunk_elems: int, max_rows_elems: int) -> torch.Tensor:
    """Every output position as one row of an FC layer pair through ``fc_kernel``; rows summed into the grid."""
    N, c_out = x_in.shape[0] * x_in.shape[1], W.shape[0]
    ho, wo = geom.out_hw()
    P = ho * wo
    ar = a.reshape(N, c_out, P).transpose(1, 2).reshape(N * P, c_out)
    hr = h.reshape(N, c_out, P).transpose(1, 2).reshape(N * P, c_out)
    Wfc = W.permute(0, 2, 3, 1).reshape(c_out, -1)  # [C_out, K*K*C_in], (offset, channel) order

    def rows(X: torch.Tensor, n0: int, n1: int) -> torch.Tensor:
        sl = slice(n0 * P, n1 * P)
        return fc_kernel(X[None], ar[None, sl], Wfc, hr[None, sl], noise, flip_scale, max_chunk_elems)[0]

    D = _patch_sums(x_in, geom, a.dtype, max_rows_elems, rows)
    return D.reshape(x_in.shape)


def conv_flip_backward_cuda(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, geom: ConvGeom,
                            noise: Noise, flip_scale: float, max_chunk_elems: int = 2**24,
                            max_rows_elems: int = 2**24) -> torch.Tensor:
    """The rows through the Triton FC kernel (easy minus hard per row; CUDA, float32, logistic, else its fallbacks)."""
    check_conv(x_in, a, W, h, geom)
    return _via_rows(psa_fc_cuda.flip_backward_cuda, x_in, a, W, h, geom, noise, flip_scale, max_chunk_elems,
                     max_rows_elems)


#: Variant name -> function (all with the signature of :func:`estimators.kernels.psa_conv.conv_flip_backward`).
CONV_VARIANTS: dict[str, Callable] = {
    "eager": conv_flip_backward,
    "fused": conv_flip_backward_fused,
    "cuda": conv_flip_backward_cuda,
}


def conv_auto_choice(x_in: torch.Tensor, W: torch.Tensor, geom: ConvGeom, noise: Noise, flip_scale: float,
                     dtype: torch.dtype) -> Callable:
    """The kernel :func:`conv_flip_backward_auto` runs for this layer: :func:`conv_flip_backward_fused` for
    layers of at least :data:`~estimators.kernels.psa_fc.AUTO_MIN_TERMS` flip terms (and ``AUTO_MIN_OUT``
    output channels) it evaluates itself, else the eager :func:`~estimators.kernels.psa_conv.conv_flip_backward`."""
    ho, wo = geom.out_hw()
    terms = x_in.shape[0] * x_in.shape[1] * ho * wo * W.numel()
    fc = psa_fc.cpu_choice(terms, W.shape[0], W, noise, flip_scale, dtype)
    return conv_flip_backward_fused if fc is psa_fc.flip_backward_fused else conv_flip_backward


def conv_flip_backward_auto(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, geom: ConvGeom,
                            noise: Noise, flip_scale: float, max_chunk_elems: int = 2**22,
                            max_rows_elems: int = 2**24) -> torch.Tensor:
    """CPU: the kernel :func:`conv_auto_choice` picks for this layer."""
    check_conv(x_in, a, W, h, geom)
    if conv_auto_choice(x_in, W, geom, noise, flip_scale, a.dtype) is conv_flip_backward_fused:  # range checked
        return _via_rows(psa_fc._fused_in_range, x_in, a, W, h, geom, noise, flip_scale, max_chunk_elems,
                         max_rows_elems)
    return conv_flip_backward(x_in, a, W, h, geom, noise, flip_scale, max_chunk_elems)


def select_conv_flip_backward(device: str | torch.device, noise: Noise, dtype: torch.dtype = torch.float32) -> Callable:
    """The fastest available conv kernel for ``device``, ``noise`` and ``dtype``."""
    logistic = isinstance(noise, Logistic)
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        if logistic and dtype == torch.float32 and psa_fc_cuda.triton_available():
            return conv_flip_backward_cuda
        return conv_flip_backward_fused if logistic else conv_flip_backward
    return conv_flip_backward_auto
