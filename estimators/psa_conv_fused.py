r"""PSA's convolutional flip-difference backward through fused kernels, and the automatic choice.

The same quantity as :func:`estimators.psa_conv.conv_flip_backward` (spec §3.8).  Every output
position $(b,o)$ becomes one row of a fully connected layer pair: the row's inputs are the patch
that position reads, gathered channels-last from the zero-padded input (``K*K*C_in`` states in
(offset, channel) order; padded entries are 0), its outputs the ``C_out`` channels at $o$, its
weights $W$ permuted to ``[C_out, K*K*C_in]``.  A fused kernel evaluates the row's terms
$h_{c}/(1+A_{c}E^{x_q}_{q,c})$ (spec §3.8 ratio form, $A=e^{-a}$, $E^\pm=e^{\pm\varsigma W}$
precomputed and clamped to $\pm40$ / $\pm300$) and reduces over $c$ without materialising the
``[rows, K*K*C_in, C_out]`` terms; the $K^2$ offset slices of the row results are then added into
the padded input grid (strided windows: the stride needs no zero insertion), whose border is cropped
(padded inputs are constants, never flipped).  Samples are processed in chunks whose gathered rows
hold at most ``max_rows_elems`` elements, and the patch columns in blocks whose $E^\pm$ slices stay
cache-sized (``2 x 2^16`` elements).

- :func:`conv_flip_backward_fused` — a ``torch.compile``d row kernel for the hard part (C++/OpenMP
  on CPU, Triton through inductor on CUDA) and the easy part as in the eager kernel (an all-ones
  transposed convolution).  Other noises, or a failing compiler, fall back to the eager
  :func:`~estimators.psa_conv.conv_flip_backward`.  The first call compiles (seconds; one dynamic
  graph per dtype).
- :func:`conv_flip_backward_cuda` — the rows through the hand-written Triton FC kernel
  :func:`estimators.psa_kernel_cuda.flip_backward_cuda` (CUDA, float32, logistic; elsewhere its
  own fallbacks), which returns easy minus hard per row.
- :func:`select_conv_flip_backward` — the automatic choice: Triton on CUDA where it applies, the
  compiled kernel for logistic noise otherwise (CPU or CUDA), else the eager ratio convolution.

Unbiasedness is not affected (the same deterministic function of the path).  Cost: the
$N\,C_{in}K^2C_{out}H_oW_o$ terms of the layer's convolution, one division each, plus gathering the
patches and adding them back ($K^2$ times the input map, per chunk).
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as nnf

from . import psa_kernel_cuda
from .model import ConvGeom
from .noise import Logistic, Noise
from .psa_conv import _easy, check_conv, clamp_limit, conv_flip_backward

__all__ = ["conv_flip_backward_fused", "conv_flip_backward_cuda", "select_conv_flip_backward", "CONV_VARIANTS"]


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


def _rows_hard(x: torch.Tensor, A: torch.Tensor, h: torch.Tensor, Ep: torch.Tensor, Em: torch.Tensor) -> torch.Tensor:
    # sum_c h_c / (1 + A_c E^{x_q}_{q,c}) per row and patch entry; inductor fuses it into one reduction loop.
    return (h[:, None, :] / (1 + A[:, None, :] * torch.where(x[:, :, None] > 0, Ep, Em))).sum(-1)


_compiled: dict[str, object] = {}


def _compiled_rows():
    fn = _compiled.get("rows")
    if fn is None:
        fn = _compiled["rows"] = torch.compile(_rows_hard, dynamic=True)
    return fn


def conv_flip_backward_fused(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, geom: ConvGeom,
                             noise: Noise, flip_scale: float, max_chunk_elems: int = 2**22,
                             max_rows_elems: int = 2**24) -> torch.Tensor:
    """The ratio convolution with a compiled row kernel (see the module docstring); returns ``[D, B, C_in H W]``."""
    check_conv(x_in, a, W, h, geom)
    if not isinstance(noise, Logistic) or _compiled.get("broken"):
        return conv_flip_backward(x_in, a, W, h, geom, noise, flip_scale, max_chunk_elems)
    Dn, B = x_in.shape[:2]
    N, (C, H, Wd, K) = Dn * B, geom.as_array()[:4]
    c_out, q = W.shape[0], K * K * C
    ho, wo = geom.out_hw()
    lim = clamp_limit(a.dtype)
    a4, h4 = a.reshape(N, c_out, ho, wo), h.reshape(N, c_out, ho, wo)
    easy = _easy(a4, h4, geom, noise)
    hr = h4.permute(0, 2, 3, 1).reshape(-1, c_out)
    Ar = torch.exp((-a4).clamp(-lim, lim)).permute(0, 2, 3, 1).reshape(-1, c_out)
    sW = (flip_scale * W).clamp(-lim, lim).permute(2, 3, 1, 0).reshape(q, c_out).contiguous()
    Ep, Em = torch.exp(sW), torch.exp(-sW)
    # CPU: E+- column blocks of 2 x 256 KiB (float32) stay in L2; CUDA: one block (fewer launches)
    qb = max(1, min(q, 2**16 // max(c_out, 1))) if a.device.type == "cpu" else q
    P = ho * wo

    def hard_rows(X: torch.Tensor, n0: int, n1: int) -> torch.Tensor:
        out = torch.empty(X.shape, dtype=a.dtype, device=a.device)
        Ab, hb = Ar[n0 * P:n1 * P], hr[n0 * P:n1 * P]
        for c0 in range(0, q, qb):
            c1 = min(q, c0 + qb)
            out[:, c0:c1] = fn(X[:, c0:c1], Ab, hb, Ep[c0:c1], Em[c0:c1])
        return out

    try:
        with warnings.catch_warnings(), torch._dynamo.config.patch(recompile_limit=32):
            warnings.simplefilter("ignore")  # inductor's imports and codegen warn; they are not ours
            fn = _compiled_rows()
            hard = _patch_sums(x_in, geom, a.dtype, max_rows_elems, hard_rows)
    except Exception:  # noqa: BLE001 - no compiler / backend: the eager kernel gives the same result
        _compiled["broken"] = True
        return conv_flip_backward(x_in, a, W, h, geom, noise, flip_scale, max_chunk_elems)
    return (easy - hard).reshape(Dn, B, C * H * Wd)


def conv_flip_backward_cuda(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, geom: ConvGeom,
                            noise: Noise, flip_scale: float, max_chunk_elems: int = 2**24,
                            max_rows_elems: int = 2**24) -> torch.Tensor:
    """The rows through the Triton FC kernel (easy minus hard per row; CUDA, float32, logistic, else its fallbacks)."""
    check_conv(x_in, a, W, h, geom)
    N, c_out = x_in.shape[0] * x_in.shape[1], W.shape[0]
    ho, wo = geom.out_hw()
    P = ho * wo
    ar = a.reshape(N, c_out, P).transpose(1, 2).reshape(N * P, c_out)
    hr = h.reshape(N, c_out, P).transpose(1, 2).reshape(N * P, c_out)
    Wfc = W.permute(0, 2, 3, 1).reshape(c_out, -1)  # [C_out, K*K*C_in], (offset, channel) order

    def rows(X: torch.Tensor, n0: int, n1: int) -> torch.Tensor:
        sl = slice(n0 * P, n1 * P)
        return psa_kernel_cuda.flip_backward_cuda(X[None], ar[None, sl], Wfc, hr[None, sl], noise, flip_scale,
                                                  max_chunk_elems)[0]

    D = _patch_sums(x_in, geom, a.dtype, max_rows_elems, rows)
    return D.reshape(x_in.shape)


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
