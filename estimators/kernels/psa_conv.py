r"""PSA's flip-difference backward for a convolutional layer pair (``docs/estimators/psa.md#convolutional``,
``docs/estimators/psa.md#encodings-and-noises``).

Input states $x$ ``[C_in, H, W]`` ($\pm1$), next-layer pre-activations $a$ ``[C_out, H_o, W_o]``,
weights $W$ ``[C_out, C_in, K, K]``, stride $s$, zero padding $p$, $h_{c,o}=x^{\rm out}_{c,o}D^{\rm out}_{c,o}$
and flip scale $\varsigma$ (2 in ``pm1``, 1 in ``01``):
$$D_{r,i}=\underbrace{\sum_c\sum_{(o,u):\,so+u-p=i}h_{c,o}F(a_{c,o})}_{\text{easy}}
\;-\;\underbrace{\sum_c\sum_{(o,u):\,so+u-p=i}h_{c,o}\,F\big(a_{c,o}-\varsigma W_{c,r,u}x_{r,i}\big)}_{\text{hard}} .$$

- :func:`conv_flip_backward_reference` — the portable reference: ``unfold`` turns every output
  position $\ell$ into a fully connected layer with $W$ reshaped to ``[C_out, C_in K^2]``;
  $\Delta_{b,q,c,\ell}=F(a_{b,c,\ell})-F(a_{b,c,\ell}-\varsigma W_{c,q}X_{b,q,\ell})$ is materialised
  (direct $F$, chunked over positions and samples), $D^{\rm unf}_{b,q,\ell}=\sum_c\Delta\,D$ and
  ``fold`` sums the patches.  Padding entries of $X$ are 0, so their $\Delta$ vanishes.
- :func:`conv_flip_backward` — the "ratio convolution" in vectorised eager torch (any device).
  Easy part: the transposed convolution, with an all-ones $K\times K$ kernel and the layer's stride
  and padding, of the one-channel map $\sum_ch_{c,o}F(a_{c,o})$, broadcast over input channels.
  Hard part: a Python loop over the $K^2$ kernel offsets $u$ only; for each, the input window that
  offset $u$ reads ($x_{r,\,so+u-p}$, a strided view of the zero-padded input — the same as
  inserting $s-1$ zeros between the entries of $h$ and $A$, without computing the zero terms) is
  combined with every output position's $h$ and $A$ in cache-sized tiles ``[rows, C_in, C_out]``
  and reduced over $c$ by a batched matrix-vector product, then added into the padded grid,
  whose border is cropped at the end (padded inputs are constants, never flipped).  Logistic noise
  uses $\sigma(a-\varsigma Wx)=1/(1+A\,E^{x})$ with $A=e^{-a}$ per output and
  $E^\pm=e^{\pm\varsigma W}$ per weight precomputed, exponents clamped to $\pm40$ (float32) /
  $\pm300$ (float64) so that nothing overflows (exact while $|a|$ and $|\varsigma W|$ stay inside
  the clamp; beyond it $\sigma$ is saturated to working precision unless both are huge and cancel);
  one multiply-add and one reciprocal per term, no exponential.  Other noises evaluate $F$ directly.

The compiled (CPU/CUDA) and Triton variants, and the automatic choice, are in
:mod:`estimators.kernels.psa_conv_fused`.  All variants are the same deterministic function of the path, so
unbiasedness is not affected.  Cost: $N\,C_{in}K^2C_{out}H_oW_o$ CDF evaluations ($N$ = draws x
batch; logistic: one reciprocal each) — the multiply-adds of the layer's convolution; extra memory
a few activation-sized tensors plus one tile of at most ``max_chunk_elems`` elements.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from ..errors import InputError
from ..model import ConvGeom
from ..model.noise import Logistic, Noise
from .psa_fc import _cdf_

__all__ = ["conv_flip_backward", "conv_flip_backward_reference", "check_conv", "clamp_limit"]

#: Elements of one temporary tile on CPU (1 MiB in float32; measured best of 2^14..2^20 on CIFAR_S1 layers).
_CACHE_TILE = 2**18


def clamp_limit(dtype: torch.dtype) -> float:
    """Exponent clamp of the ratio form: 40 in float32 (and below), 300 in float64."""
    return 300.0 if dtype == torch.float64 else 40.0


def check_conv(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, geom: ConvGeom) -> None:
    """Raise :class:`InputError` unless the shapes fit ``geom`` (``x_in`` ``[D,B,C_in H W]``, ``a``/``h`` ``[D,B,C_out H_o W_o]``)."""
    if not (x_in.dim() == a.dim() == h.dim() == 3 and W.dim() == 4):
        raise InputError("conv_flip_backward expects x_in, a, h shaped [D, B, n] and W shaped [C_out, C_in, K, K]")
    ho, wo = geom.out_hw()
    c_out = W.shape[0]
    if (W.shape[1:] != (geom.channels, geom.kernel, geom.kernel) or x_in.shape[-1] != geom.in_size
            or a.shape != h.shape or a.shape[-1] != c_out * ho * wo or x_in.shape[:2] != a.shape[:2]):
        raise InputError(f"conv_flip_backward: shape mismatch for geometry {geom.as_array()}: x_in {list(x_in.shape)}, "
                         f"a {list(a.shape)}, W {list(W.shape)}, h {list(h.shape)}")


def conv_flip_backward_reference(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor,
                                 geom: ConvGeom, noise: Noise, flip_scale: float,
                                 max_chunk_elems: int = 2**24) -> torch.Tensor:
    """Unfold reference (direct $F$, materialised $\\Delta$ chunks of at most ``max_chunk_elems``); returns ``[D,B,C_in H W]``."""
    check_conv(x_in, a, W, h, geom)
    Dn, B = x_in.shape[:2]
    N, (C, H, Wd, K) = Dn * B, (geom.channels, geom.height, geom.width, geom.kernel)
    c_out, q = W.shape[0], C * K * K
    X = nnf.unfold(x_in.reshape(N, C, H, Wd), K, padding=geom.padding, stride=geom.stride)  # [N, q, P]
    P = X.shape[-1]
    a3, h3 = a.reshape(N, c_out, P), h.reshape(N, c_out, P)
    Fa, Wq = noise.cdf(a3), W.reshape(c_out, q).T  # [q, c]
    out = torch.empty(N, q, P, dtype=a.dtype, device=a.device)
    per_pos = max(1, q * c_out)
    pos = max(1, min(P, int(max_chunk_elems) // per_pos))
    rows = max(1, min(N, int(max_chunk_elems) // (per_pos * pos)))
    for n0 in range(0, N, rows):
        n1 = min(N, n0 + rows)
        for l0 in range(0, P, pos):
            l1 = min(P, l0 + pos)
            shifted = a3[n0:n1, None, :, l0:l1] - flip_scale * X[n0:n1, :, None, l0:l1] * Wq[None, :, :, None]
            delta = Fa[n0:n1, None, :, l0:l1] - noise.cdf(shifted)  # [n, q, c, l]
            out[n0:n1, :, l0:l1] = (delta * h3[n0:n1, None, :, l0:l1]).sum(2)
    D = nnf.fold(out, (H, Wd), K, padding=geom.padding, stride=geom.stride)
    return D.reshape(Dn, B, C * H * Wd)


def _easy(a4: torch.Tensor, h4: torch.Tensor, geom: ConvGeom, noise: Noise) -> torch.Tensor:
    """Transposed conv (all-ones kernel) of $\\sum_ch\\,F(a)$: ``[N, 1, H, W]``, the same for every input channel."""
    m = (h4 * noise.cdf(a4)).sum(1, keepdim=True)
    ones = torch.ones(1, 1, geom.kernel, geom.kernel, dtype=m.dtype, device=m.device)
    return nnf.conv_transpose2d(m, ones, None, geom.stride, geom.padding, geom.output_padding())


def _rows(t4: torch.Tensor) -> torch.Tensor:
    """``[N, C, Ho, Wo]`` -> position-major rows ``[N*Ho*Wo, C]`` (contiguous)."""
    return t4.permute(0, 2, 3, 1).reshape(-1, t4.shape[1])


def conv_flip_backward(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, geom: ConvGeom,
                       noise: Noise, flip_scale: float, max_chunk_elems: int = 2**22) -> torch.Tensor:
    """The ratio convolution in eager torch (see the module docstring); returns ``D_in`` shaped ``[D, B, C_in H W]``.

    Args:
        x_in: ``[D, B, C_in*H*W]`` $\\pm1$ states of the layer being flipped (channel-major).
        a: ``[D, B, C_out*H_o*W_o]`` next-layer pre-activations.
        W: ``[C_out, C_in, K, K]`` next-layer weights.
        h: like ``a``, $x^{\\rm out}\\odot D^{\\rm out}$.
        geom: the next layer's geometry (its input map, kernel, stride, padding).
        noise: the noise law ($F$); logistic uses the ratio form.
        flip_scale: 2.0 (``pm1``) or 1.0 (``01``).
        max_chunk_elems: bound on the elements of one temporary tile (tiles stay cache-sized on CPU).
    """
    check_conv(x_in, a, W, h, geom)
    Dn, B = x_in.shape[:2]
    N, (C, H, Wd, K, s, p) = Dn * B, geom.as_array()
    c_out = W.shape[0]
    ho, wo = geom.out_hw()
    a4, h4 = a.reshape(N, c_out, ho, wo), h.reshape(N, c_out, ho, wo)
    easy = _easy(a4, h4, geom, noise)
    xp = nnf.pad(x_in.reshape(N, C, H, Wd), (p, p, p, p)) if p else x_in.reshape(N, C, H, Wd)
    hard = torch.zeros(N, C, H + 2 * p, Wd + 2 * p, dtype=a.dtype, device=a.device)
    if N == 0:
        return (easy - hard).reshape(Dn, B, -1)
    ratio = isinstance(noise, Logistic)
    lim = clamp_limit(a.dtype)
    hr = _rows(h4).unsqueeze(-1)  # [R, C_out, 1]
    ar = _rows(a4)
    A = torch.exp((-ar).clamp(-lim, lim)) if ratio else None
    R = ar.shape[0]
    budget = max(1, min(int(max_chunk_elems), _CACHE_TILE if a.device.type == "cpu" else int(max_chunk_elems)))
    ci = max(1, min(C, budget // max(c_out, 1)))  # input channels per tile
    rows = max(1, budget // (ci * max(c_out, 1)))  # output positions per tile
    term = torch.empty(R, C, dtype=a.dtype, device=a.device)
    for du in range(K):
        for dv in range(K):
            xr = _rows(xp[:, :, du:du + s * (ho - 1) + 1:s, dv:dv + s * (wo - 1) + 1:s])  # [R, C_in]
            Wt = W[:, :, du, dv].T  # [C_in, C_out]
            if ratio:
                sW = (flip_scale * Wt).clamp(-lim, lim)
                Ep, Em = torch.exp(sW), torch.exp(-sW)
                on = (xr > 0).to(a.dtype).unsqueeze(-1)  # lerp weight: E^x = Em + on (Ep - Em), exact at 0 and 1
            for c0 in range(0, C, ci):
                c1 = min(C, c0 + ci)
                for r0 in range(0, R, rows):
                    r1 = min(R, r0 + rows)
                    if ratio:  # 1 / (1 + A E^x); lerp selects (2x faster than where with broadcasting)
                        tile = torch.lerp(Em[c0:c1], Ep[c0:c1], on[r0:r1, c0:c1])
                        tile.mul_(A[r0:r1, None, :]).add_(1.0).reciprocal_()
                    else:
                        tile = torch.addcmul(ar[r0:r1, None, :], xr[r0:r1, c0:c1, None], Wt[None, c0:c1],
                                             value=-flip_scale)
                        tile = _cdf_(noise, tile)
                    term[r0:r1, c0:c1] = torch.bmm(tile, hr[r0:r1]).squeeze(-1)
            win = hard[:, :, du:du + s * (ho - 1) + 1:s, dv:dv + s * (wo - 1) + 1:s]
            win += term.reshape(N, ho, wo, C).permute(0, 3, 1, 2)
    hard = hard[:, :, p:p + H, p:p + Wd]
    return (easy - hard).reshape(Dn, B, C * H * Wd)
