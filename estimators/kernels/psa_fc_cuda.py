r"""PSA's FC flip-difference backward, fused for CUDA (Triton), with a blocked torch path of the same math.

Same quantity as :func:`estimators.kernels.psa_fc.flip_backward` (``docs/estimators/psa.md#fully-connected``):
for rows $r$ (draws x
batch), inputs $i$ and outputs $j$,
$$D_{ri}=\sum_jh_{rj}F(a_{rj})-\sum_jh_{rj}\,F\big(a_{rj}-s\,W_{ji}x_{ri}\big).$$
For logistic noise the hard part uses the ratio form of ``docs/estimators/psa.md#convolutional`` with both flip
signs precomputed,
$$\sigma(a-sWx)=\frac1{1+A\,E^{x}},\qquad A_{rj}=e^{-a_{rj}},\quad E^{\pm}_{ji}=e^{\pm sW_{ji}},$$
so the inner loop is one select, one multiply-add and one division per term (no exponential).
Exponents are clamped to $\pm40$ in float32 ($\pm300$ in float64), so $1+AE\le e^{80}$ never
overflows.  Beyond the clamp the argument becomes ${\rm clamp}(a)-{\rm clamp}(sW)x$: exact to
working precision where $\sigma$ saturates either way, not in general (both huge and cancelling).
The entry point :func:`flip_backward_cuda` therefore runs the kernel only inside the exact range of
:func:`estimators.kernels.psa_fc.in_exact_range` ($s\max|W|\le17$ in float32: $sW$ is never clamped and
a clamped $|a|>40$ stays beyond $\pm23$, where $\sigma$ is saturated), and the eager kernel elsewhere.

- :func:`flip_backward_cuda` — the Triton kernel (CUDA, float32, logistic): one program per
  ``BLOCK_R x BLOCK_I`` tile of the output accumulates rank-one updates over $j$ in registers
  (column vectors of $A^\top$, $h^\top$, $E^\pm$ are contiguous loads), nothing is materialised;
  $j$ is split across programs when the tile grid alone would leave SMs idle (partial sums are
  added in a fixed order, so results are deterministic).  Inputs it does not cover (CPU, other
  noises or dtypes, weights beyond the exact range, no Triton) go to :func:`estimators.kernels.psa_fc.flip_backward` (eager; on CPU it
  is twice as fast as the blocked ratio form below).
- :func:`flip_backward_ratio` — the same ratio-form algorithm in blocked torch (any device): the
  CPU-testable mirror of the kernel's math (clamps, precomputed $E^\pm$, block bounds), checked
  against the naive reference on CPU.
- :func:`select_flip_backward` — the automatic choice for a device: Triton on CUDA when it is
  importable (float32, logistic), else ``torch.compile`` (``flip_backward_fused``); on CPU
  :func:`~estimators.kernels.psa_fc.flip_backward_auto` (compiled for large layers, eager for small).

Unbiasedness is not affected (it is the same deterministic function of the path).  Cost:
$R\,n_{in}n_{out}$ divisions and multiply-adds, $2\,n_{out}n_{in}+R\,n_{out}$ exponentials in all;
extra memory: $E^\pm$ for one input block plus $A^\top,h^\top$ (bounded by ``max_chunk_elems``).
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch

from ..model.noise import Logistic, Noise
from . import psa_fc

__all__ = ["flip_backward_cuda", "flip_backward_ratio", "select_flip_backward", "triton_available"]

_state: dict[str, object] = {}


def _lim(dtype: torch.dtype) -> float:
    return 300.0 if dtype == torch.float64 else 40.0


def _blocks(n_in: int, n_out: int, max_chunk_elems: int) -> int:
    """Input units per block so that $E^\\pm$ of one block (2 x n_out x block) stay within the budget."""
    return max(1, min(n_in, int(max_chunk_elems) // max(2 * n_out, 1)))


def flip_backward_ratio(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, noise: Noise,
                        flip_scale: float, max_chunk_elems: int = 2**22) -> torch.Tensor:
    """Ratio-form kernel in blocked torch (logistic noise; other noises go to the eager kernel)."""
    psa_fc._check(x_in, a, W, h)
    if not isinstance(noise, Logistic):
        return psa_fc.flip_backward(x_in, a, W, h, noise, flip_scale, max_chunk_elems)
    Dn, B, n_in = x_in.shape
    n_out, R = a.shape[-1], Dn * B
    lim = _lim(a.dtype)
    x2, a2, h2 = x_in.reshape(R, n_in), a.reshape(R, n_out), h.reshape(R, n_out)
    A = torch.exp((-a2).clamp(-lim, lim))
    hard = torch.empty(R, n_in, dtype=a.dtype, device=a.device)
    ci = _blocks(n_in, n_out, max_chunk_elems)
    rows = max(1, int(max_chunk_elems) // max(ci * n_out, 1))
    for c0 in range(0, n_in, ci):
        c1 = min(n_in, c0 + ci)
        sW = (flip_scale * W[:, c0:c1].T.contiguous()).clamp(-lim, lim)  # [ci, n_out], row-major
        Ep, Em = torch.exp(sW), torch.exp(-sW)
        for r0 in range(0, R, rows):
            r1 = min(R, r0 + rows)
            E = torch.where(x2[r0:r1, c0:c1, None] > 0, Ep, Em)  # [rows, ci, n_out]
            E.mul_(A[r0:r1, None, :]).add_(1.0).reciprocal_()
            hard[r0:r1, c0:c1] = torch.bmm(E, h2[r0:r1, :, None]).squeeze(-1)
    out = (h2 * torch.sigmoid(a2)).sum(-1, keepdim=True) - hard
    return out.reshape(Dn, B, n_in)


# ---- Triton ---------------------------------------------------------------------------------------

def triton_available() -> bool:
    """True when Triton imports and a CUDA device is present (the kernel's requirements)."""
    if "kernel" not in _state:
        _state["kernel"] = _build_kernel() if torch.cuda.is_available() else None
    return _state["kernel"] is not None


def _build_kernel():
    try:
        import triton
        import triton.language as tl
    except Exception:  # noqa: BLE001 - no Triton (CPU builds of torch)
        return None
    approx = "approx" in inspect.signature(tl.fdiv).parameters

    @triton.jit
    def _psa_ratio(x_ptr, at_ptr, ht_ptr, ep_ptr, em_ptr, out_ptr, R, NI, NO, JPER,
                   sx_r, sx_i, s_t, s_e, so_s, so_r, so_i,
                   BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr, UNROLL: tl.constexpr, APPROX: tl.constexpr):
        pid_r, pid_i, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
        rm, cm = rows < R, cols < NI
        x = tl.load(x_ptr + rows[:, None] * sx_r + cols[None, :] * sx_i, mask=rm[:, None] & cm[None, :], other=1.0)
        pos = x > 0
        acc = tl.zeros((BLOCK_R, BLOCK_I), dtype=tl.float32)
        j_lo = pid_s * JPER
        j_hi = tl.minimum(j_lo + JPER, NO)
        for j0 in range(j_lo, j_hi, UNROLL):
            for u in tl.static_range(UNROLL):
                j = j0 + u
                rmj = rm & ((rows * 0 + j) < j_hi)
                cmj = cm & ((cols * 0 + j) < j_hi)
                A = tl.load(at_ptr + j * s_t + rows, mask=rmj, other=1.0)
                hv = tl.load(ht_ptr + j * s_t + rows, mask=rmj, other=0.0)
                ep = tl.load(ep_ptr + j * s_e + cols, mask=cmj, other=1.0)
                em = tl.load(em_ptr + j * s_e + cols, mask=cmj, other=1.0)
                d = A[:, None] * tl.where(pos, ep[None, :], em[None, :]) + 1.0
                num = tl.broadcast_to(hv[:, None], (BLOCK_R, BLOCK_I))
                if APPROX:
                    acc += tl.fdiv(num, d, approx=True)
                else:
                    acc += tl.fdiv(num, d)
        tl.store(out_ptr + pid_s * so_s + rows[:, None] * so_r + cols[None, :] * so_i, acc,
                 mask=rm[:, None] & cm[None, :])

    return triton, _psa_ratio, approx


def _launch_plan(R: int, ci: int, n_out: int, sms: int, block_r: int = 64, block_i: int = 64) -> tuple[int, int]:
    """(split over j, outputs per split): enough programs for about 4 per SM, at least 128 outputs each."""
    tiles = -(-R // block_r) * -(-ci // block_i)
    split = max(1, min(-(-4 * sms // tiles), max(1, n_out // 128)))
    jper = -(-n_out // split)
    return -(-n_out // jper), jper


def flip_backward_cuda(x_in: torch.Tensor, a: torch.Tensor, W: torch.Tensor, h: torch.Tensor, noise: Noise,
                       flip_scale: float, max_chunk_elems: int = 2**22) -> torch.Tensor:
    """:func:`~estimators.kernels.psa_fc.flip_backward` through the Triton kernel where it applies (see module doc)."""
    psa_fc._check(x_in, a, W, h)
    if not (a.is_cuda and a.dtype == torch.float32 and isinstance(noise, Logistic) and triton_available()
            and psa_fc.in_exact_range(W, flip_scale, a.dtype)):
        return psa_fc.flip_backward(x_in, a, W, h, noise, flip_scale, max_chunk_elems)
    Dn, B, n_in = x_in.shape
    n_out, R = a.shape[-1], Dn * B
    x2, a2, h2 = x_in.reshape(R, n_in), a.reshape(R, n_out), h.reshape(R, n_out)
    sms = torch.cuda.get_device_properties(a.device).multi_processor_count
    hard = _triton_hard(_state["kernel"], x2, a2, W, h2, flip_scale, max_chunk_elems, sms)
    out = (h2 * torch.sigmoid(a2)).sum(-1, keepdim=True) - hard
    return out.reshape(Dn, B, n_in)


def _triton_hard(built, x2: torch.Tensor, a2: torch.Tensor, W: torch.Tensor, h2: torch.Tensor, flip_scale: float,
                 max_chunk_elems: int, sms: int) -> torch.Tensor:
    """The hard part ``[R, n_in]`` through the kernel (any device Triton runs on, incl. its CPU interpreter)."""
    triton, kernel, approx = built
    (R, n_in), n_out = x2.shape, a2.shape[-1]
    hard = torch.empty(R, n_in, dtype=a2.dtype, device=a2.device)
    if R == 0 or n_in == 0:
        return hard
    lim = _lim(a2.dtype)
    At = torch.exp((-a2).clamp(-lim, lim)).T.contiguous()  # [n_out, R]
    ht = h2.T.contiguous()
    ci = _blocks(n_in, n_out, max_chunk_elems)
    BR, BI, UNROLL = 64, 64, 4
    for c0 in range(0, n_in, ci):
        c1 = min(n_in, c0 + ci)
        sW = (flip_scale * W[:, c0:c1]).clamp(-lim, lim)  # [n_out, ci]
        Ep, Em = torch.exp(sW).contiguous(), torch.exp(-sW).contiguous()
        split, jper = _launch_plan(R, c1 - c0, n_out, sms, BR, BI)
        part = torch.empty(split, R, c1 - c0, dtype=a2.dtype, device=a2.device)
        xs = x2[:, c0:c1]
        grid = (triton.cdiv(R, BR), triton.cdiv(c1 - c0, BI), split)
        kernel[grid](xs, At, ht, Ep, Em, part, R, c1 - c0, n_out, jper,
                     xs.stride(0), xs.stride(1), At.stride(0), Ep.stride(0), part.stride(0), part.stride(1),
                     part.stride(2), BLOCK_R=BR, BLOCK_I=BI, UNROLL=UNROLL, APPROX=approx, num_warps=4)
        hard[:, c0:c1] = part[0] if split == 1 else part.sum(0)
    return hard


def select_flip_backward(device: str | torch.device, noise: Noise, dtype: torch.dtype = torch.float32) -> Callable:
    """The fastest available kernel for ``device``, ``noise`` and ``dtype`` (same signature as ``flip_backward``)."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        if isinstance(noise, Logistic) and dtype == torch.float32 and triton_available():
            return flip_backward_cuda
        return psa_fc.flip_backward_fused
    return psa_fc.flip_backward_auto
