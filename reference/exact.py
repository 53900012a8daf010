r"""Exact expected loss and gradient of small SBNs, in float64 (the suite's ground truth).

Two independent algorithms (``docs/exact.md``):

- ``transfer`` — the layer-by-layer transfer-matrix forward algorithm.  The marginal of each layer's
  joint state is propagated, $P^{k+1}=P^kT^{k+1}$, with data-independent transition matrices
  $\log T^{k+1}=\log F(A)M_+^\top+\log F(-A)M_-^\top$ (one matrix product each), and
  $\mathcal L_b=\sum_tP^L_b(t)f(t,y_b)$.  Cost $\approx B n_1(n_0+2^{n_1})+\sum_k2^{n_k+n_{k+1}}
  (2n_{k+1}+B)+2^{n_L}(n_LC+B)$ multiply-adds; linear in depth, exponential in width.
- ``brute`` — direct enumeration of every joint path $(x^1..x^L)$ with its probability
  $\prod_k\prod_jF(x^k_ja^k_j)$; cost $B\,2^{\sum_kn_k}$ path evaluations.  The cross-check.

Gradients come from autograd through either algorithm.  Work is chunked over data points to stay
within a memory budget; a problem whose estimate exceeds the budget is refused with one line.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch

from estimators.errors import InputError
from estimators.model import Problem

__all__ = ["Exact", "exact", "exact_loss", "memory_estimate", "check_feasible", "all_states", "DEFAULT_BUDGET"]

DEFAULT_BUDGET = 4 * 2**30
_F64 = 8


def all_states(n: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """All $2^n$ vectors of $\\{-1,+1\\}^n$, ``[2^n, n]``; row ``s`` has unit ``j`` = bit ``j`` of ``s``."""
    idx = torch.arange(2**n, device=device)
    bits = (idx[:, None] >> torch.arange(n, device=device)) & 1
    return (2 * bits - 1).to(dtype)


@dataclass
class Exact:
    """Exact objective: ``loss`` (batch mean), per-group gradients (float64, flat), and the method used."""

    loss: float
    grads: dict[str, torch.Tensor]
    method: str

    @property
    def flat(self) -> torch.Tensor:
        return torch.cat(list(self.grads.values()))


def memory_estimate(problem: Problem, method: str = "transfer", chunk: int | None = None) -> tuple[int, int]:
    """``(fixed_bytes, bytes_per_data_point)`` of the exact computation (float64, autograd included)."""
    w = problem.widths[1:]
    C = problem.n_out
    if method == "transfer":
        # logF(A), logF(-A), log T, T and their gradients per layer pair; head logits table.
        fixed = sum(6 * 2 ** (w[k] + w[k + 1]) + 4 * 2 ** w[k] * w[k + 1] for k in range(len(w) - 1))
        fixed += 4 * 2 ** w[-1] * C
        per_point = 6 * sum(2**n for n in w) + 4 * w[0] + 2 ** w[-1] * (C + 2)
    elif method == "brute":
        n_paths = 2 ** sum(w)
        fixed = n_paths * (sum(w) + 4 * len(w) + C + 4)
        per_point = n_paths * (2 * w[0] + 6)
    else:
        raise InputError(f"unknown exact method {method!r}; choose transfer or brute")
    # the state tables: all_states builds int64 indices and bits, then float64 states, their encoding and
    # the 0/1 masks of each layer (about ten [2^n, n] tables at the peak; measured, docs/exact.md#memory)
    fixed += 10 * sum(2**n * n for n in w)
    return fixed * _F64, per_point * _F64


#: a layer wider than this is refused before any estimate is computed (2^64 joint states)
MAX_ENUMERABLE_WIDTH = 64


def _size(n_bytes: int) -> str:
    """A byte count for a message: GiB while printable, else a power of two."""
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes.bit_length() < 100 else f"2^{n_bytes.bit_length() - 1} bytes"


def _plan(problem: Problem, method: str, budget: int) -> int:
    widths = "-".join(map(str, problem.widths))
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise InputError(f"the memory budget must be a positive number of bytes, got {budget!r}")
    widest = max(problem.widths[1:])
    if widest > MAX_ENUMERABLE_WIDTH:
        raise InputError(f"exact reference for widths {widths}: a layer of {widest} units has 2^{widest} joint "
                         f"states, far beyond any memory budget; use layers of at most ~13 units")
    fixed, per_point = memory_estimate(problem, method)
    need = fixed + per_point
    if need > budget:
        raise InputError(
            f"exact reference ({method}) for widths {widths} needs about {_size(need)}, over the "
            f"{_size(budget)} budget; use narrower layers or raise --memory-budget"
        )
    return max(1, min(problem.batch_size, (budget - fixed) // per_point))


def check_feasible(problem: Problem, method: str = "transfer", budget: int = DEFAULT_BUDGET) -> None:
    """Raise :class:`InputError` (one line, naming the widths and the estimate) if the exact reference would not fit."""
    if method not in _METHODS:
        raise InputError(f"unknown exact method {method!r}; choose one of {', '.join(_METHODS)}")
    _plan(problem, method, budget)


def _log_probs(problem: Problem, a: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    r"""$\sum_j\log F(s_ja_j)$ for every row of ``a [R, n]`` and state ``s`` of ``states [S, n]`` -> ``[R, S]``."""
    law = problem.noise_law
    plus = (states > 0).to(a.dtype)
    return law.log_cdf(a) @ plus.T + law.log_cdf(-a) @ (1 - plus).T


class _Transfer:
    """Transfer-matrix pieces shared by every chunk of data points."""

    def __init__(self, p: Problem):
        self.p = p
        w = p.widths[1:]
        self.states = [all_states(n, p.dtype, p.device) for n in w]
        self.T = []
        for k in range(1, p.depth):
            A = p.preact(k, p.enc(self.states[k - 1]))
            self.T.append(torch.exp(_log_probs(p, A, self.states[k])))
        self.head_in = p.enc(self.states[-1])  # [2^nL, nL]

    def point_losses(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = self.p
        P = torch.exp(_log_probs(p, p.preact(0, X), self.states[0]))  # [b, 2^n1]
        for T in self.T:
            P = P @ T
        eta = p.head(self.head_in)  # [2^nL, C]
        f = p.loss_fn.value(eta.unsqueeze(0).expand(X.shape[0], *eta.shape), _labels_per_state(y, eta))
        return (P * f).sum(1)


def _labels_per_state(y: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """Labels broadcast against a ``[b, S, C]`` logits table: ``[b, S]`` (or ``[b, S, C]`` targets)."""
    S = eta.shape[0]
    if y.dim() == 1:
        return y[:, None].expand(y.shape[0], S)
    return y[:, None, :].expand(y.shape[0], S, y.shape[1])


class _Brute:
    """Direct enumeration of every joint path."""

    def __init__(self, p: Problem):
        self.p = p
        w = p.widths[1:]
        joint = all_states(sum(w), p.dtype, p.device)
        self.layers = list(torch.split(joint, list(w), dim=1))  # each [P, n_k]
        law = p.noise_law
        logp = torch.zeros(joint.shape[0], dtype=p.dtype, device=p.device)
        for k in range(1, p.depth):
            a = p.preact(k, p.enc(self.layers[k - 1]))
            logp = logp + law.log_cdf(self.layers[k] * a).sum(1)
        self.logp_rest = logp  # layers 2..L, independent of the data point
        self.eta = p.head(p.enc(self.layers[-1]))  # [P, C]

    def point_losses(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = self.p
        a1 = p.preact(0, X)  # [b, n1]
        s1 = self.layers[0]
        logp1 = p.noise_law.log_cdf(s1[None, :, :] * a1[:, None, :]).sum(2)  # [b, P]
        prob = torch.exp(logp1 + self.logp_rest)
        f = p.loss_fn.value(self.eta.unsqueeze(0).expand(X.shape[0], *self.eta.shape), _labels_per_state(y, self.eta))
        return (prob * f).sum(1)


_METHODS = {"transfer": _Transfer, "brute": _Brute}


def exact_loss(problem: Problem, method: str = "transfer", budget: int = DEFAULT_BUDGET) -> torch.Tensor:
    """Differentiable exact batch-mean expected loss (float64 scalar) of ``problem`` as given."""
    if method not in _METHODS:
        raise InputError(f"unknown exact method {method!r}; choose one of {', '.join(_METHODS)}")
    chunk = _plan(problem, method, budget)
    engine = _METHODS[method](problem)
    B = problem.batch_size
    parts = [engine.point_losses(problem.X[i : i + chunk], problem.y[i : i + chunk]).sum() for i in range(0, B, chunk)]
    return torch.stack(parts).sum() / B


@torch.enable_grad()  # autograd differentiates the enumeration, whatever the caller (or a plugin) switched off
def exact(problem: Problem, method: str = "transfer", budget: int = DEFAULT_BUDGET) -> Exact:
    """Exact loss and per-group gradient in float64, chunked over data points to fit ``budget`` bytes."""
    if method not in _METHODS:
        raise InputError(f"unknown exact method {method!r}; choose one of {', '.join(_METHODS)}")
    p64 = problem.to(dtype=torch.float64)
    leaves = [g.detach().clone().requires_grad_(True) for g in p64.group_params()]
    p = p64.with_group_params(leaves)
    chunk = _plan(p, method, budget)
    engine = _METHODS[method](p)
    B = p.batch_size
    total = torch.zeros((), dtype=torch.float64, device=p.device)
    starts = list(range(0, B, chunk))
    for n, i in enumerate(starts):
        part = engine.point_losses(p.X[i : i + chunk], p.y[i : i + chunk]).sum() / B
        part.backward(retain_graph=n < len(starts) - 1)
        total += part.detach()
    grads = {name: (leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)).detach()
             for name, leaf in zip(p.group_names, leaves)}
    if not math.isfinite(float(total)) or not all(bool(torch.isfinite(g).all()) for g in grads.values()):
        biggest = max(float(t.detach().abs().max()) for t in (*problem.weights, problem.head_weight, problem.X))
        raise InputError(f"the exact expected loss or gradient of {problem.name} is not finite in float64 (largest "
                         f"weight or input {biggest:.3g}); such a problem cannot be scored")
    return Exact(loss=float(total), grads=grads, method=method)
