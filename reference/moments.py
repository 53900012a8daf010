r"""Exact mean and single-draw variance of path-deterministic estimators by path enumeration
(``docs/exact.md#exact-moments``).

A path-deterministic estimator is a function $\hat g_b(\text{path})$ of the sampled path of every data
point.  Enumerating all $2^{\sum_kn_k}$ joint paths of each point with their probabilities
$p_b(\text{path})=\prod_k\prod_jF(x^k_ja^k_j)$ gives, in float64,
$$\mathbb E[\hat g]=\frac1B\sum_b\sum_{\text{paths}}p_b\,\hat g_b,\qquad
\operatorname{Var}[\hat g]=\frac1{B^2}\sum_b\operatorname{Var}_b[\hat g_b]\quad\text{(per coordinate).}$$
The paths of one point are fed to the estimator's ``from_path`` as the "draws" of the one-point
sub-problem ``problem.subset([b])`` (vectorised over paths, in chunks; a Python loop over points).
Cost: $B\cdot2^{\sum_kn_k}$ path evaluations.
"""

from __future__ import annotations

import torch

from estimators.base import Estimator
from estimators.errors import InputError
from estimators.model import Path, Problem

from .exact import all_states

__all__ = ["path_moments", "enumerate_paths", "MAX_PATHS"]

#: Refuse problems with more joint paths per data point than this (2^22 ~ 4.2 million).
MAX_PATHS = 2**22


def enumerate_paths(problem: Problem, states: torch.Tensor) -> tuple[Path, torch.Tensor]:
    r"""The :class:`Path` of a one-point problem whose draws are the given joint states, and $\log p$.

    ``states`` is ``[P, \sum_k n_k]`` ($\pm1$).  The uniforms are set to the midpoint of the
    interval that produces each state ($u=F(a)/2$ for $+1$, $(1+F(a))/2$ for $-1$).
    Returns the path (tensors ``[P, 1, n_k]``) and ``log p`` shaped ``[P]``.
    """
    if problem.batch_size != 1:
        raise InputError(f"enumerate_paths needs a one-point problem, got {problem.batch_size} points")
    law = problem.noise_law
    P = states.shape[0]
    xs = torch.split(states, list(problem.widths[1:]), dim=1)
    path = Path([], [], [], [])
    inp = problem.X.expand(P, *problem.X.shape)
    logp = torch.zeros(P, dtype=problem.dtype, device=problem.device)
    for k, xk in enumerate(xs):
        x = xk.unsqueeze(1)  # [P, 1, n_k]
        a = problem.preact(k, inp)
        Fa = law.cdf(a)
        path.inputs.append(inp)
        path.a.append(a)
        path.x.append(x)
        path.u.append(torch.where(x > 0, 0.5 * Fa, 0.5 * (1 + Fa)))
        logp = logp + law.log_cdf(x * a).sum((1, 2))
        inp = problem.enc(x)
    return path, logp


def _merge(left: tuple, right: tuple) -> tuple:
    """Chan's pairwise merge of weighted ``(weight, mean, M2)`` accumulators."""
    wa, ma, qa = left
    wb, mb, qb = right
    w = wa + wb
    d = mb - ma
    return w, ma + d * (wb / w), qa + qb + d * d * (wa * wb / w)


def path_moments(estimator: Estimator, problem: Problem, chunk: int = 2**15,
                 max_paths: int = MAX_PATHS) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Exact ``{group: (mean [size], var [size])}`` (float64) of one draw of ``estimator`` on ``problem``.

    ``var`` is the per-coordinate variance of a single draw; its sum is the covariance trace.
    Raises :class:`InputError` for estimators that are not path-deterministic (or lack
    ``from_path``) and for problems with more than ``max_paths`` joint paths per point.
    """
    if not (estimator.path_deterministic and estimator.has_from_path):
        raise InputError(f"estimator {estimator.spec} is not path-deterministic; exact moments need from_path")
    estimator.check(problem)
    n_units = sum(problem.widths[1:])
    if 2**n_units > max_paths:
        raise InputError(
            f"exact moments need 2^{n_units} paths per data point, over the limit of {max_paths}; "
            f"use narrower layers"
        )
    p64 = problem.to(dtype=torch.float64)
    states = all_states(n_units, torch.float64, p64.device)
    sizes = p64.group_sizes
    B = p64.batch_size
    mean = [torch.zeros(n, dtype=torch.float64, device=p64.device) for n in sizes]
    var = [torch.zeros(n, dtype=torch.float64, device=p64.device) for n in sizes]
    for b in range(B):
        sub = p64.subset(slice(b, b + 1))
        acc = [(0.0, torch.zeros_like(m), torch.zeros_like(m)) for m in mean]  # (weight, mean, M2)
        for s0 in range(0, states.shape[0], chunk):
            path, logp = enumerate_paths(sub, states[s0 : s0 + chunk])
            p = torch.exp(logp)
            live = p > 0  # impossible paths (uniform noise) may give non-finite estimates
            w = float(p.sum())
            if w == 0.0:
                continue
            ests = estimator.from_path(sub, path, None)
            for g, est in enumerate(ests):
                est = torch.where(live[:, None], est.to(torch.float64), 0.0)
                # elementwise products, not p @ est: a BLAS gemv per chunk is needlessly threaded
                mu = (p[:, None] * est).sum(0) / w
                m2 = (p[:, None] * (est - mu) ** 2).sum(0)
                acc[g] = _merge(acc[g], (w, mu, m2))
        for g, (w, mu, m2) in enumerate(acc):
            mean[g] += mu / B
            var[g] += m2 / w / B**2
    return {name: (m, v) for name, m, v in zip(p64.group_names, mean, var)}
