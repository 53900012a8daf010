r"""Per-draw parameter replication: per-draw gradients from one autograd call.

Plain autograd sums a loss's gradient over the draws dimension.  Giving every draw its own copy of
the parameters, ``leaves[g]`` shaped ``[R, size_g]`` (one row per replica), and summing the
replicas' batch-mean losses makes $\partial(\sum_r\mathcal L_r)/\partial\,\mathrm{leaves}[g]_r
=\partial\mathcal L_r/\partial\theta_g$: row ``r`` of the gradient is replica ``r``'s own gradient.
Layers are evaluated with batched matrix products, so the cost per replica equals one forward and
one backward pass of the network.  Used by the moment-propagation estimators (ADF, local
reparameterisation), whose forward pass is not a plain sampled pass.
"""

from __future__ import annotations

import torch

from .model import Problem

__all__ = ["replicate", "unpack", "linear", "affine", "per_replica_grads", "safe_sqrt"]


def replicate(problem: Problem, copies: int) -> list[torch.Tensor]:
    """One leaf per parameter group, ``[copies, size]`` (the problem's values repeated), requiring grad."""
    return [g.detach().unsqueeze(0).repeat(copies, 1).requires_grad_(True) for g in problem.group_params()]


def unpack(problem: Problem, leaves: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per group ``(W [R, n, m], b [R, n])`` views of replicated leaves (layers, then the head)."""
    shapes = [tuple(w.shape) for w in problem.weights] + [tuple(problem.head_weight.shape)]
    out = []
    for leaf, (n, m) in zip(leaves, shapes):
        out.append((leaf[:, : n * m].reshape(-1, n, m), leaf[:, n * m :]))
    return out


def linear(inp: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``inp [R, B, m]`` -> ``inp @ W^T`` shaped ``[R, B, n]`` for ``W [R, n, m]`` (size-1 leading dims broadcast)."""
    return torch.matmul(inp, W.transpose(-1, -2))


def affine(inp: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``inp [R, B, m]`` -> ``inp @ W^T + b`` shaped ``[R, B, n]``, one weight matrix per replica."""
    return linear(inp, W) + b.unsqueeze(-2)


def per_replica_grads(losses: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients ``[R, size]`` of each replica's batch-mean loss; ``losses`` is per point, ``[R, B]``."""
    return list(torch.autograd.grad(losses.mean(1).sum(), leaves))


def safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    r"""$\sqrt v$ with a finite derivative: ``v`` is clamped below at the dtype's smallest normal number.

    A variance that underflows to 0 (saturated units) would otherwise give $0\cdot\infty$ = NaN in
    the backward pass; below the clamp the derivative is 0.
    """
    return torch.sqrt(v.clamp_min(torch.finfo(v.dtype).tiny))
