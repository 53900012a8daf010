r"""Per-draw parameter replication: per-draw gradients from one autograd call.

Plain autograd sums a loss's gradient over the draws dimension.  Giving every draw its own copy of
the parameters, ``leaves[g]`` shaped ``[R, size_g]`` (one row per replica), and summing the
replicas' batch-mean losses makes $\partial(\sum_r\mathcal L_r)/\partial\,\mathrm{leaves}[g]_r
=\partial\mathcal L_r/\partial\theta_g$: row ``r`` of the gradient is replica ``r``'s own gradient.
Layers are evaluated with batched matrix products (fully connected) or one grouped convolution
over all replicas (convolutional layers: the replicas' channels side by side, ``groups=R``), so
the cost per replica equals one forward and one backward pass of the network.  Used by the moment-propagation estimators (ADF, local
reparameterisation), whose forward pass is not a plain sampled pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf

from .problem import Problem

__all__ = ["replicate", "unpack", "linear", "affine", "layer_affine", "layer_linear", "per_replica_grads", "safe_sqrt"]


def replicate(problem: Problem, copies: int) -> list[torch.Tensor]:
    """One leaf per parameter group, ``[copies, size]`` (the problem's values repeated), requiring grad."""
    return [g.detach().unsqueeze(0).repeat(copies, 1).requires_grad_(True) for g in problem.group_params()]


def unpack(problem: Problem, leaves: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per group ``(W [R, *shape], b [R, n])`` views of replicated leaves (layers, then the head).

    ``shape`` is the group's weight shape: ``[n, m]`` (fully connected, head) or ``[C_out, C_in, K, K]``.
    """
    shapes = [tuple(w.shape) for w in problem.weights] + [tuple(problem.head_weight.shape)]
    out = []
    for leaf, shape in zip(leaves, shapes):
        nw = math.prod(shape)
        out.append((leaf[:, :nw].reshape(-1, *shape), leaf[:, nw:]))
    return out


def linear(inp: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``inp [R, B, m]`` -> ``inp @ W^T`` shaped ``[R, B, n]`` for ``W [R, n, m]`` (size-1 leading dims broadcast)."""
    return torch.matmul(inp, W.transpose(-1, -2))


def affine(inp: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``inp [R, B, m]`` -> ``inp @ W^T + b`` shaped ``[R, B, n]``, one weight matrix per replica."""
    return linear(inp, W) + b.unsqueeze(-2)


def _conv_replicas(problem: Problem, k: int, inp: torch.Tensor, W: torch.Tensor,
                   b: torch.Tensor | None) -> torch.Tensor:
    """Layer ``k``'s convolution for every replica at once: ``inp [R|1, B, C*H*W]``, ``W [R|1, C_out, C, K, K]``."""
    geom = problem.conv[k]
    R = max(inp.shape[0], W.shape[0])
    B = inp.shape[1]
    C, H, Wd = geom.channels, geom.height, geom.width
    W = W.expand(R, *W.shape[1:])
    x = inp.expand(R, *inp.shape[1:]).reshape(R, B, C, H, Wd).transpose(0, 1).reshape(B, R * C, H, Wd)
    bias = None if b is None else b.expand(R, b.shape[-1]).reshape(-1)
    out = nnf.conv2d(x, W.reshape(R * W.shape[1], C, geom.kernel, geom.kernel), bias, geom.stride, geom.padding,
                     groups=R)
    return out.reshape(B, R, -1).transpose(0, 1)


def layer_affine(problem: Problem, k: int, inp: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pre-activation of stochastic layer ``k`` per replica, ``[R, B, n_k]``: :func:`affine` or a grouped convolution."""
    if problem.conv[k] is None:
        return affine(inp, W, b)
    return _conv_replicas(problem, k, inp, W, b)


def layer_linear(problem: Problem, k: int, inp: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """The linear part of layer ``k`` with the given (e.g. squared) weights per replica (no bias)."""
    if problem.conv[k] is None:
        return linear(inp, W)
    return _conv_replicas(problem, k, inp, W, None)


def per_replica_grads(losses: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients ``[R, size]`` of each replica's batch-mean loss; ``losses`` is per point, ``[R, B]``."""
    return list(torch.autograd.grad(losses.mean(1).sum(), leaves))


def safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    r"""$\sqrt v$ with a finite derivative: ``v`` is clamped below at the dtype's smallest normal number.

    A variance that underflows to 0 (saturated units) would otherwise give $0\cdot\infty$ = NaN in
    the backward pass; below the clamp the derivative is 0.
    """
    return torch.sqrt(v.clamp_min(torch.finfo(v.dtype).tiny))
