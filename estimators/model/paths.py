r"""Sampled paths and the per-draw gradient helpers every estimator builds on.

:func:`sample_path` draws one independent path per (draw, data point) by inverse-CDF sampling
($x=+1$ iff $u<F(a)$); :func:`layer_grad` and :func:`head_grad` turn per-draw unit derivatives into
per-draw group gradients (batched outer products); :func:`backprop` is backpropagation with given
unit slopes, the engine of the straight-through family and the relaxations.
See ``docs/model.md#definition`` and ``docs/model.md#parameter-groups``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .problem import Problem, layer_grad

__all__ = ["Path", "sample_path", "sample_in_chunks", "layer_grad", "head_grad", "backprop"]


@dataclass
class Path:
    """One sampled path per (draw, data point).

    ``x[k]`` are the $\\pm1$ states of layer ``k+1``, ``a[k]`` their pre-activations and ``u[k]`` the
    uniforms that produced them ($x=+1$ iff $u<F(a)$); all shaped ``[D, B, n_{k+1}]``.
    ``inputs[k]`` is what layer ``k+1`` read: ``inputs[0]`` is ``X`` broadcast, later ones are encoded.
    """

    x: list[torch.Tensor]
    a: list[torch.Tensor]
    u: list[torch.Tensor]
    inputs: list[torch.Tensor]


def _uniform(shape, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


def sample_path(problem: Problem, draws: int, generator: torch.Generator, start: int = 0,
                x_start: torch.Tensor | None = None) -> Path:
    """Sample layers ``start+1..L`` for ``draws`` draws: one independent path per data point and draw.

    With ``start > 0``, ``x_start`` (``[D, B, n_start]``, $\\pm1$) is the given state of layer
    ``start`` and sampling continues downstream from it (used by ARM, local expectation, ...).
    """
    if start == 0:
        inp = problem.X.expand(draws, *problem.X.shape)
    else:
        inp = problem.enc(x_start)
    law = problem.noise_law
    path = Path([], [], [], [])
    for k in range(start, problem.depth):
        if k == 0:  # the data layer is the same in every draw: compute it once, broadcast (read-only)
            a = problem.preact(0, problem.X).expand(draws, *problem.X.shape[:1], problem.layer_width(0))
        else:
            a = problem.preact(k, inp)
        u = _uniform(a.shape, a, generator)
        on = (u < law.cdf(a)).to(a.dtype)  # 1 where x = +1
        x = on.mul(2.0).sub_(1.0)
        path.inputs.append(inp)
        path.a.append(a)
        path.u.append(u)
        path.x.append(x)
        inp = x if problem.encoding == "pm1" else on
    return path


def sample_in_chunks(from_path, problem: Problem, draws: int, generator: torch.Generator,
                     chunk: int) -> list[torch.Tensor]:
    """Per-draw group gradients of ``from_path(problem, path, generator)`` over ``draws`` sampled paths, drawn
    and evaluated ``chunk`` draws at a time (bounded memory), concatenated per group."""
    parts = [from_path(problem, sample_path(problem, min(chunk, draws - d0), generator), generator)
             for d0 in range(0, draws, chunk)]
    return [torch.cat(g) for g in zip(*parts)]


def head_grad(problem: Problem, xL_enc: torch.Tensor, deta: torch.Tensor | None = None) -> torch.Tensor:
    """Per-draw head-group gradient at encoded last-layer states; ``deta`` defaults to $\\partial f/\\partial\\eta$."""
    if deta is None:
        deta = problem.loss_fn.grad(problem.head(xL_enc), problem.y)
    return layer_grad(deta, xL_enc)


def backprop(problem: Problem, inputs: Sequence[torch.Tensor], slopes: Sequence[torch.Tensor],
             xL_enc: torch.Tensor) -> list[torch.Tensor]:
    r"""Backpropagation with given unit derivatives: the shared engine of the ST family and relaxations.

    ``inputs[k]`` is what layer ``k+1`` read (encoded), ``slopes[k]`` is
    $\partial\,\mathrm{enc}(x^{k+1})/\partial a^{k+1}$ (``[D,B,n]``), and ``xL_enc`` is what the head
    read.  Returns per-draw group gradients ``[D, size]`` (layers, then head) of the batch-mean loss
    of the network in which each unit is replaced by its value with the given slope.
    Cost: one backward pass, $O(DB\sum_k n_kn_{k-1})$.
    """
    deta = problem.loss_fn.grad(problem.head(xL_enc), problem.y)
    grads = [head_grad(problem, xL_enc, deta)]
    g = deta @ problem.head_weight  # d f / d enc(x^L)
    for k in range(problem.depth - 1, -1, -1):
        delta = g * slopes[k]
        grads.append(problem.param_grad(k, delta, inputs[k]))
        if k:
            g = problem.input_grad(k, delta)
    grads.reverse()
    return grads
