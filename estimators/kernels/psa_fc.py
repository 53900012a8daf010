r"""PSA's fully connected flip-difference backward kernel (``docs/estimators/psa.md#algorithm``,
``docs/estimators/psa.md#fully-connected``, ``docs/estimators/psa.md#encodings-and-noises``).

For one layer pair, with $x$ the $\pm1$ states of the layer being flipped, $a$ the next layer's
pre-activations, $W$ its weights and $h_j=x^{\rm out}_jD^{\rm out}_j$:
$$D_i=\underbrace{\sum_jh_jF(a_j)}_{\text{easy: the same for every }i}
\;-\;\underbrace{\sum_jh_j\,F\big(a_j-s\,W_{ji}x_i\big)}_{\text{hard: a "nonlinear matrix product"}},$$
with flip scale $s=2$ (``pm1``) or $s=1$ (``01``).  The hard part has the $R\,n_{in}n_{out}$ terms of a
GEMM ($R=D\cdot B$ rows) but every term needs one CDF evaluation, so no GEMM library applies.

- :func:`flip_backward` — eager torch, any noise.  The hard part is evaluated tile by tile: one
  fused ``addcmul`` builds $a_j-sW_{ji}x_i$ for a ``[rows, n_in_block, n_out]`` tile, $F$ is
  applied in place and a batched matrix-vector product with $h$ reduces over $j$.  Tiles are
  bounded by ``max_chunk_elems`` (and kept cache-sized), so a ``[R, n_in, n_out]`` tensor is
  never materialised.  Measured on one CPU thread this direct form beats the ratio form in eager
  mode (three memory passes per term instead of five).
- :func:`flip_backward_fused` — the same result through ``torch.compile``-fused loops that never
  write a tile (logistic noise).  With $A=e^{-a}$, $A'=e^{a}$, $E=e^{sW^\top}$ precomputed,
  $F(a-sW)=1/(1+AE)$ and $F(a+sW)=1-1/(1+A'E)$, so the inner loop has no exponential, and two
  terms share one division, $h_0/d_0+h_1/d_1=(h_0d_1+h_1d_0)/(d_0d_1)$.  Exact to rounding inside
  its range ($s\max|W|\le17$ in float32, $\le260$ in float64); other inputs, other noises or a
  failing compiler go to :func:`flip_backward`.  The first call per process compiles (seconds).
- :func:`flip_backward_auto` — the CPU choice (:func:`cpu_choice`): fused for layers of at least
  ``AUTO_MIN_TERMS`` terms and ``AUTO_MIN_OUT`` outputs, eager below (no compile for small networks).
- :func:`flip_backward_reference` — the naive materialising formula with a direct $F$ evaluation,
  for tests.

Cost: $R\,n_{in}n_{out}$ CDF evaluations (fused: half a division and ~4 multiply-adds each);
extra memory: the ``[R, n_in]`` result plus (eager) one ``[R, n_out]`` temporary and ``max_chunk_elems``
tiles, or (fused) ``[R, 1]`` row sums and blocks of at most ``_ROWS``/``_TABLE``/``_OUT_BLOCK`` elements.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from ..errors import InputError
from ..model.noise import Gaussian, Logistic, Noise, Uniform

__all__ = ["flip_backward", "flip_backward_fused", "flip_backward_reference", "flip_backward_auto", "cpu_choice",
           "auto_choice", "fused_supported", "in_exact_range", "fused_runs"]

#: Tiles larger than this many elements fall out of the L2 cache and run slower (measured).
_CACHE_TILE = 2**16


def _check(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor) -> None:
    if not (x_in.dim() == a.dim() == h.dim() == 3 and W.dim() == 2):
        raise InputError("flip_backward expects x_in, a, h shaped [D, B, n] and W shaped [n_out, n_in]")
    if a.shape != h.shape or W.shape != (a.shape[-1], x_in.shape[-1]) or x_in.shape[:2] != a.shape[:2]:
        raise InputError(
            f"flip_backward: shape mismatch: x_in {list(x_in.shape)}, a {list(a.shape)}, W {list(W.shape)}, h {list(h.shape)}"
        )


def _cdf_(noise: Noise, t: torch.Tensor) -> torch.Tensor:
    """$F$ applied in place where the noise allows it (saves one pass over the tile)."""
    if isinstance(noise, Logistic):
        return t.sigmoid_()
    if isinstance(noise, Gaussian):
        return torch.special.ndtr(t, out=t)
    if isinstance(noise, Uniform):
        return t.add_(1).mul_(0.5).clamp_(0.0, 1.0)
    return noise.cdf(t)


def _easy(a: torch.Tensor, h: torch.Tensor, noise: Noise) -> torch.Tensor:
    """$\\sum_jh_jF(a_j)$ per row, ``[R, 1]`` (one ``[R, n_out]`` temporary)."""
    return torch.linalg.vecdot(h, noise.cdf(a)).unsqueeze(-1)


def flip_backward(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, noise: Noise,
                  flip_scale: float, max_chunk_elems: int = 2**22) -> torch.Tensor:
    r"""$D^{\rm in}_i=\sum_jh_j\big(F(a_j)-F(a_j-s\,W_{ji}x_i)\big)$ for every row, chunked (eager).

    Args:
        x_in: ``[D, B, n_in]`` $\pm1$ states of the layer being flipped.
        a: ``[D, B, n_out]`` next-layer pre-activations.
        W: ``[n_out, n_in]`` next-layer weights.
        h: ``[D, B, n_out]``, $x^{\rm out}\odot D^{\rm out}$.
        noise: the noise law ($F$).
        flip_scale: $s$, 2.0 (``pm1``) or 1.0 (``01``).
        max_chunk_elems: bound on the elements of one temporary tile.

    Returns:
        ``D_in`` shaped ``[D, B, n_in]``.
    """
    _check(x_in, a, W, h)
    Dn, B, n_in = x_in.shape
    n_out = a.shape[-1]
    R = Dn * B
    x2, a2, h2 = x_in.reshape(R, n_in), a.reshape(R, n_out), h.reshape(R, n_out)
    out = torch.empty(R, n_in, dtype=a.dtype, device=a.device)
    if R == 0 or n_in == 0:
        return out.reshape(Dn, B, n_in)
    budget = max(1, min(int(max_chunk_elems), _CACHE_TILE if a.device.type == "cpu" else int(max_chunk_elems)))
    ci = max(1, min(n_in, budget // max(n_out, 1)))  # input units per tile
    rows = max(1, budget // (ci * max(n_out, 1)))  # rows per tile
    hcol = h2.unsqueeze(-1)  # [R, n_out, 1]
    for c0 in range(0, n_in, ci):
        c1 = min(n_in, c0 + ci)
        Wt = W[:, c0:c1].T.contiguous()[None]  # [1, ci, n_out]: one block of W^T, never the whole
        for r0 in range(0, R, rows):
            r1 = min(R, r0 + rows)
            tile = torch.addcmul(a2[r0:r1, None, :], x2[r0:r1, c0:c1, None], Wt, value=-flip_scale)
            tile = _cdf_(noise, tile)
            out[r0:r1, c0:c1] = torch.bmm(tile, hcol[r0:r1]).squeeze(-1)
    return out.neg_().add_(_easy(a2, h2, noise)).reshape(Dn, B, n_in)


def flip_backward_reference(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, noise: Noise,
                            flip_scale: float) -> torch.Tensor:
    """Naive form for tests: materialises ``[D, B, n_in, n_out]`` and evaluates $F$ directly."""
    _check(x_in, a, W, h)
    shifted = a[..., None, :] - flip_scale * x_in[..., :, None] * W.T  # [D, B, n_in, n_out]
    delta = noise.cdf(a)[..., None, :] - noise.cdf(shifted)
    return (delta * h[..., None, :]).sum(-1)


# ---- fused (torch.compile) variant -----------------------------------------------------------------

#: float32: pre-activations are clamped to +-34; exact (to rounding) while s*max|W| <= 17: a flipped
#: argument beyond the clamp is then beyond +-17 both before and after clamping, where sigma is within
#: 4.1e-8 of 1 or 0, so a term changes by at most 4.1e-8 |h_j| (below float32's epsilon).  Every
#: denominator is then at most 1 + e^51 and a pair's numerator stays finite (h is scaled to |h| <= 1).
#: float64: the same with 300 and 260 (sigma(+-40) is within 4e-18 of 1 or 0).  Outside: eager kernel.
_RANGES = {torch.float32: (34.0, 17.0), torch.float64: (300.0, 260.0)}
#: E tables of at most this many elements (1 MiB in float32: L2-resident; measured best on one core)
_TABLE = 2**18
#: row blocks of at most this many elements per [rows, n_out] temporary (bounds the extra memory)
_ROWS = 2**17
#: ... and of at most this many elements per [rows, n_in_block] result (narrow layers have wide blocks)
_OUT_BLOCK = 2**19
#: compiled graphs per function: one per dtype and input pattern (block shapes, views); beyond this
#: dynamo raises and the eager kernel takes over (never an unfused eager run of the pair expression)
_RECOMPILE_LIMIT = 64
#: outputs j per pass: the row vectors a pass reads (3 x this many) stay in L1 (measured: 1.3x at 2048)
_JBLOCK = 1024
#: wide layers (>= _PAD_MIN outputs) are padded to multiples of _LANES outputs: two halves of 16 float32 lanes
_LANES, _PAD_MIN = 32, 256
#: inductor: FMA contraction, and the whole pair expression fused into one loop (measured 1.3x)
_OPTIONS = {"cpp.enable_floating_point_contract_flag": "fast", "realize_reads_threshold": 64,
            "realize_cpu_opcount_threshold": 1000, "realize_cpu_acc_reads_threshold": 64}


def _easy_sums(a: torch.Tensor, h: torch.Tensor):
    r"""Per row: $\max_j|h_j|$ and the easy parts $\sum_jh_jF(a_j)$, $\sum_jh_jF(-a_j)$ (``[R, 1]`` each)."""
    scale = h.abs().amax(-1, keepdim=True).clamp_min(1e-30)
    return scale, (h * torch.sigmoid(a)).sum(-1, keepdim=True), (h * torch.sigmoid(-a)).sum(-1, keepdim=True)


def _row_vectors(a: torch.Tensor, h: torch.Tensor, scale: torch.Tensor, lim: float):
    r"""Per row: $A=e^{-a}$, $A'=1/A=e^{a}$ (a clamped to $\pm$ ``lim``) and $h/\max|h|$."""
    A = torch.exp(-a.clamp(-lim, lim))
    return A, 1 / A, h / scale


def _table(Wb: torch.Tensor, s: float):
    """$E_{ij}=e^{sW_{ji}}$ for one block of input units, row-major ``[n_in_block, n_out]``."""
    return torch.exp(s * Wb.T).contiguous()


def _pair_sums(x, A0, A1, B0, B1, h0, h1, E0, E1):
    r"""$\sum_jh_j/d_j$ over one block of $j$, $d_j=1+C_jE_{ij}$ with $C=A$ ($x>0$) or $A'$ ($x<0$),
    the block's two halves summed two terms per division."""
    pos = x[:, :, None] > 0
    d0 = 1 + torch.where(pos, A0[:, None, :], B0[:, None, :]) * E0
    d1 = 1 + torch.where(pos, A1[:, None, :], B1[:, None, :]) * E1
    return ((h0[:, None, :] * d1 + h1[:, None, :] * d0) / (d0 * d1)).sum(-1)


def _last_pairs(x, A0, A1, B0, B1, h0, h1, E0, E1, S0, scale, ep, em):
    r"""The last block's :func:`_pair_sums` added to ``S0`` (the earlier blocks' sums, or 0) and finished in
    the same loop: $D=$ ``ep`` $-S$ for $x>0$, $S-$ ``em`` for $x<0$ ($S$ rescaled by $\max|h|$)."""
    S = (S0 + _pair_sums(x, A0, A1, B0, B1, h0, h1, E0, E1)) * scale
    return torch.where(x > 0, ep - S, S - em)


_compiled: dict[str, object] = {}


def fused_runs() -> int:
    """How many layer pairs the compiled loops have evaluated in this process (calls that fell back to the
    eager kernel not counted): lets a caller (the CI gate) verify that the compiled path really ran."""
    return int(_compiled.get("runs", 0))


def _compiled_fns():
    fns = _compiled.get("fns")
    if fns is None:
        fns = tuple(torch.compile(f, dynamic=True, options=_OPTIONS)
                    for f in (_easy_sums, _row_vectors, _table, _pair_sums, _last_pairs))
        _compiled["fns"] = fns
    return fns


def in_exact_range(W: torch.Tensor, flip_scale: float, dtype: torch.dtype) -> bool:
    """$s\\max|W|$ within the range where the clamped ratio forms are exact (``_RANGES``; float32/64 only)."""
    if dtype not in _RANGES:
        return False
    if W.numel() == 0:
        return True
    lo, hi = torch.aminmax(W.detach())
    return max(-float(lo), float(hi)) * abs(flip_scale) <= _RANGES[dtype][1]


def fused_supported(W: torch.Tensor, noise: Noise, flip_scale: float, dtype: torch.dtype) -> bool:
    """Whether :func:`flip_backward_fused` evaluates these inputs itself (else it calls the eager kernel)."""
    if not isinstance(noise, Logistic) or _compiled.get("broken"):
        return False
    return in_exact_range(W, flip_scale, dtype)


def flip_backward_fused(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, noise: Noise,
                        flip_scale: float, max_chunk_elems: int = 2**22) -> torch.Tensor:
    r""":func:`flip_backward` through compiled, non-materialising loops (logistic noise;
    ``docs/estimators/psa.md#convolutional``).

    Same arguments and result.  With $A=e^{-a}$, $A'=e^{a}$ and $E=e^{sW^\top}$ (no exponential in
    the inner loop):
    $$F(a_j-sW_{ji})=\frac1{1+A_jE_{ij}},\qquad F(a_j+sW_{ji})=1-\frac1{1+A'_jE_{ij}},$$
    so $D_i=\sum_jh_jF(a_j)-S_i(A)$ for $x_i=+1$ and $D_i=S_i(A')-\sum_jh_jF(-a_j)$ for $x_i=-1$,
    $S_i(C)=\sum_jh_j/(1+C_jE_{ij})$.  In blocks of at most ``_JBLOCK`` outputs, the two halves of
    a block are summed in pairs,
    $h_0/d_0+h_1/d_1=(h_0d_1+h_1d_0)/(d_0d_1)$: one division per two terms (a division costs ~10
    FMAs' time on a CPU).  $h$ is scaled to $\max_j|h_j|=1$ per row and the ranges in ``_RANGES``
    keep every numerator finite; a product $d_0d_1$ can overflow only when both terms are below
    $10^{-16}$, and then the pair contributes 0.

    Falls back to :func:`flip_backward` (exact for any input) for other noises and dtypes, for
    $s\max|W|$ beyond the range, or when ``torch.compile`` is unavailable.  $E$ is built per block
    of input units (at most ``_TABLE`` elements) and rows in blocks of at most ``_ROWS`` elements of
    ``[rows, n_out]`` and ``_OUT_BLOCK`` of ``[rows, n_in_block]``, so the extra memory is the output
    plus a few such blocks (``max_chunk_elems`` only matters to the eager fallback).  The first call per
    process compiles (seconds); more than ``_RECOMPILE_LIMIT`` graphs per function (input patterns)
    hand the call to the eager kernel.
    """
    _check(x_in, a, W, h)
    if not fused_supported(W, noise, flip_scale, a.dtype):
        return flip_backward(x_in, a, W, h, noise, flip_scale, max_chunk_elems)
    return _fused_in_range(x_in, a, W, h, noise, flip_scale, max_chunk_elems)


def _fused_in_range(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, noise: Noise,
                    flip_scale: float, max_chunk_elems: int = 2**22) -> torch.Tensor:
    """:func:`flip_backward_fused` for inputs the caller has checked with :func:`fused_supported`."""
    Dn, B, n_in = x_in.shape
    n_out = a.shape[-1]
    R = Dn * B
    out = torch.empty(R, n_in, dtype=a.dtype, device=a.device)
    if R == 0 or n_in == 0 or n_out == 0:  # no output j: every flip changes nothing
        return out.zero_().reshape(Dn, B, n_in)
    lim = _RANGES[a.dtype][0]
    x2, a2, h2 = x_in.reshape(R, n_in), a.reshape(R, n_out), h.reshape(R, n_out)
    # zero-weight, zero-h output columns (each adds 0 / 2) complete the last pair, and in wide layers
    # make every half-block whole vectors (no pass runs masked tails)
    unit = _LANES if n_out >= _PAD_MIN else 2
    n = unit * -(-n_out // unit)
    if n > n_out:
        a2, h2 = torch.nn.functional.pad(a2, (0, n - n_out)), torch.nn.functional.pad(h2, (0, n - n_out))
        W = torch.nn.functional.pad(W, (0, 0, 0, n - n_out))
    nb = -(-n // _JBLOCK)  # blocks of outputs j, each a multiple of ``unit``, its halves paired
    jb = unit * -(-n // (unit * nb))
    ci = max(1, min(n_in, _TABLE // n))
    rows = max(1, min(_ROWS // n, _OUT_BLOCK // ci))
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    try:
        with warnings.catch_warnings(), torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT,
                                                                  fail_on_recompile_limit_hit=True):
            warnings.simplefilter("ignore")  # inductor's imports and codegen warn; they are not ours
            easy_sums, row_vectors, table, pair_sums, last_pairs = _compiled_fns()
            scale, ep, em = easy_sums(a2, h2)
            for c0 in range(0, n_in, ci):
                c1 = min(n_in, c0 + ci)
                E = table(W[:, c0:c1], float(flip_scale))
                for r0 in range(0, R, rows):
                    r1 = min(R, r0 + rows)
                    A, Ap, hs = row_vectors(a2[r0:r1], h2[r0:r1], scale[r0:r1], lim)
                    xb = x2[r0:r1, c0:c1]
                    S = zero
                    for j0 in range(0, n, jb):
                        j1 = min(n, j0 + jb)
                        jm = (j0 + j1) // 2
                        halves = (A[:, j0:jm], A[:, jm:j1], Ap[:, j0:jm], Ap[:, jm:j1], hs[:, j0:jm], hs[:, jm:j1],
                                  E[:, j0:jm], E[:, jm:j1])
                        if j1 < n:  # an earlier block: its partial sums, accumulated in place
                            part = pair_sums(xb, *halves)
                            S = part if j0 == 0 else S.add_(part)
                            del part
                        else:  # the last block, finished in the same loop
                            out[r0:r1, c0:c1] = last_pairs(xb, *halves, S, scale[r0:r1], ep[r0:r1], em[r0:r1])
                    del A, Ap, hs, halves, S  # freed before the next row block's are built (peak memory)
                del E  # likewise before the next table
    except torch._dynamo.exc.FailOnRecompileLimitHit:  # a new input pattern beyond the limit: this call
        return flip_backward(x_in, a, W[:n_out], h, noise, flip_scale, max_chunk_elems)
    except Exception:  # noqa: BLE001 - no compiler / backend: the eager kernel gives the same result
        _compiled["broken"] = True
        return flip_backward(x_in, a, W[:n_out], h, noise, flip_scale, max_chunk_elems)
    _compiled["runs"] = fused_runs() + 1
    return out.reshape(Dn, B, n_in)


# ---- automatic choice on CPU -----------------------------------------------------------------------

#: ``auto`` on CPU keeps layers with fewer flip terms than this on the eager kernel: compiling the
#: fused one costs seconds once per process, which only large layers (where it is 4-10x faster) repay.
AUTO_MIN_TERMS = 2**21
#: ... and layers narrower than this (the pair kernel vectorises over half the outputs: 16 lanes)
AUTO_MIN_OUT = 32


def cpu_choice(terms: int, n_out: int, W: torch.Tensor, noise: Noise, flip_scale: float, dtype: torch.dtype) -> Callable:
    """:func:`flip_backward_fused` for layers of at least ``AUTO_MIN_TERMS`` terms and ``AUTO_MIN_OUT``
    outputs that it evaluates itself (:func:`fused_supported`), else :func:`flip_backward`."""
    if terms >= AUTO_MIN_TERMS and n_out >= AUTO_MIN_OUT and fused_supported(W, noise, flip_scale, dtype):
        return flip_backward_fused
    return flip_backward


def auto_choice(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, noise: Noise, flip_scale: float) -> Callable:
    """The kernel :func:`flip_backward_auto` runs for this layer (:func:`cpu_choice` of its size)."""
    n_out = a.shape[-1]
    return cpu_choice(x_in.numel() * n_out, n_out, W, noise, flip_scale, a.dtype)


def flip_backward_auto(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, noise: Noise,
                       flip_scale: float, max_chunk_elems: int = 2**22) -> torch.Tensor:
    """:func:`flip_backward` or :func:`flip_backward_fused`, whichever :func:`auto_choice` picks."""
    _check(x_in, a, W, h)
    if auto_choice(x_in, a, W, noise, flip_scale) is flip_backward_fused:  # range already checked
        return _fused_in_range(x_in, a, W, h, noise, flip_scale, max_chunk_elems)
    return flip_backward(x_in, a, W, h, noise, flip_scale, max_chunk_elems)
