r"""Losses on the head output $\eta=W^{L+1}x^L+b^{L+1}$.

- ``logistic``: scalar head, labels $y\in\{-1,+1\}$, $f=\log(1+e^{-y\eta})$,
  $\partial f/\partial\eta=-y\,\sigma(-y\eta)$.
- ``softmax``: $C$-class head, integer labels $y\in\{0..C-1\}$, $f=-\log\mathrm{softmax}(\eta)_y$,
  $\partial f/\partial\eta=\mathrm{softmax}(\eta)-e_y$.
- ``squared``: vector head, real targets $y\in\mathbb R^C$, $f=\lVert\eta-y\rVert^2$,
  $\partial f/\partial\eta=2(\eta-y)$.  It expresses the literature's Bernoulli toys
  ($f=\sum_i(b_i-p_{0,i})^2$ with an identity head).

``value(eta, y)`` takes ``eta`` shaped ``[..., B, C]`` and ``y`` shaped ``[B]`` (or ``[B, C]`` for
``squared``) and returns ``[..., B]``; ``grad`` returns $\partial f/\partial\eta$ shaped like ``eta``.
"""

from __future__ import annotations

import torch

from ..errors import InputError

__all__ = ["Loss", "LOSSES", "get_loss"]


class Loss:
    name: str = ""

    def value(self, eta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad(self, eta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_labels(self, y: torch.Tensor, n_out: int) -> None:
        """Raise :class:`InputError` (naming array ``y``) for labels outside the loss's domain."""
        raise NotImplementedError


class Logistic(Loss):
    name = "logistic"

    def value(self, eta, y):
        return torch.nn.functional.softplus(-y * eta[..., 0])

    def grad(self, eta, y):
        return (-y * torch.sigmoid(y * -eta[..., 0])).unsqueeze(-1)

    def check_labels(self, y, n_out):
        if n_out != 1:
            raise InputError(f"array 'W_head': the logistic loss needs a scalar head, got {n_out} outputs")
        if y.dim() != 1 or not bool(((y == 1) | (y == -1)).all()):
            raise InputError("array 'y': the logistic loss needs labels in {-1, +1}")


class Softmax(Loss):
    name = "softmax"

    def value(self, eta, y):
        idx = y.long().expand(eta.shape[:-1]).unsqueeze(-1)
        return torch.logsumexp(eta, -1) - eta.gather(-1, idx).squeeze(-1)

    def grad(self, eta, y):
        onehot = torch.nn.functional.one_hot(y.long(), eta.shape[-1]).to(eta.dtype)
        return torch.softmax(eta, -1) - onehot

    def check_labels(self, y, n_out):
        if n_out < 2:
            raise InputError(f"array 'W_head': the softmax loss needs at least 2 outputs, got {n_out}")
        integral = not y.is_floating_point() or bool((y == y.round()).all())
        ok = y.dim() == 1 and integral and bool(((y >= 0) & (y < n_out)).all())
        if not ok:
            raise InputError(f"array 'y': the softmax loss needs integer labels in 0..{n_out - 1}")


class Squared(Loss):
    name = "squared"

    def value(self, eta, y):
        return ((eta - y) ** 2).sum(-1)

    def grad(self, eta, y):
        return 2 * (eta - y)

    def check_labels(self, y, n_out):
        if y.dim() != 2 or y.shape[1] != n_out:
            raise InputError(f"array 'y': the squared loss needs targets shaped [B, {n_out}], got {list(y.shape)}")


LOSSES: dict[str, Loss] = {c.name: c() for c in (Logistic, Softmax, Squared)}


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise InputError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None
