r"""The scoring engine: stream an estimator's draws and score them against the exact gradient.

For one (problem, estimator, $N$ draws, grid of $M$) and every parameter group plus ``all``
(``docs/scores.md#metrics``):

- ``bias_norm``: $\lVert b\rVert$ with $\lVert b\rVert^2$ estimated without the noise floor,
  $\lVert\bar g-g\rVert^2-\operatorname{tr}\widehat{\mathrm{Var}}/N$ (clipped at 0); its CI is a
  normal interval on $\lVert b\rVert^2$ with variance $2\sum_i\sigma_i^4/N^2+4\sum_ib_i^2\sigma_i^2/N$
  (diagonal approximation), mapped through the square root.  ``rel_bias`` divides by $\lVert g\rVert$;
  ``noise_floor`` is $\sqrt{\operatorname{tr}\mathrm{Var}/N}/\lVert g\rVert$.
- ``trace_var``: $\operatorname{tr}\mathrm{Var}$ of one draw (CI from the spread of
  $\lVert\hat g_d-g\rVert^2$); ``snr`` $=\lVert\bar g\rVert/\sqrt{\operatorname{tr}\mathrm{Var}}$.
- ``rel_rmse`` at each $M$: $\sqrt{\lVert b\rVert^2+\operatorname{tr}\mathrm{Var}/M}/\lVert g\rVert$
  (valid for estimators that average i.i.d. draws), and ``rel_rmse_emp``: the PSA paper's empirical
  RMSE over non-overlapping groups of $M$ consecutive draws, with a CI from the spread over groups.
- ``cos_mean``, ``cos_q15``, ``cos_q85``: cosine between each group's $M$-average and $g$.
- ``var_x_seconds``, ``var_x_loss_evals``: work-normalised variance.

Draws are generated in chunks; per-coordinate moments accumulate in float64 (Welford + Chan,
:mod:`bench.accumulate`) and the $M$-groups are formed from one running prefix sum per chunk, so
memory does not grow with $N$ (cosine quantiles keep an evenly thinned sample of at most
``QUANTILE_CAP`` values per $M$; their mean is exact).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import torch

from estimators.base import Estimator
from estimators.errors import InputError
from estimators.model import Problem

from .accumulate import Moments

__all__ = ["score", "Scores", "psa_grid", "default_grid", "chunk_size", "QUANTILE_CAP"]

QUANTILE_CAP = 20_000
_Z = 1.959963984540054  # two-sided 95%


def psa_grid(n_max: int) -> list[int]:
    """The PSA paper's M grid (1..9, 10..90, 100..900, 1000..9000, ...) up to ``n_max``."""
    grid = [d * 10**e for e in range(0, 7) for d in range(1, 10)]
    return [m for m in grid if m <= n_max]


def default_grid(draws: int) -> list[int]:
    """The PSA grid up to ``draws // 2`` (every M then has at least two groups), and at least M = 1."""
    return psa_grid(max(1, draws // 2))


class _Thinned:
    """An evenly thinned record of a stream of i.i.d. values: keeps every ``step``-th, at most ``cap``."""

    def __init__(self, cap: int):
        self.cap, self.step, self.seen, self.parts = cap, 1, 0, []

    def add(self, values: np.ndarray) -> None:
        idx = np.arange(self.seen, self.seen + len(values))
        self.parts.append(values[idx % self.step == 0])
        self.seen += len(values)
        if sum(len(p) for p in self.parts) > self.cap:
            kept = np.concatenate(self.parts)
            self.parts, self.step = [kept[::2]], self.step * 2

    def values(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0)


@dataclass
class _GroupsOfM:
    """Running state of the non-overlapping M-groups for one M."""

    M: int
    carry_sum: np.ndarray
    carry_n: int = 0
    groups: int = 0
    err_sum: dict = field(default_factory=dict)  # group -> sum of ||mean_M - g||^2
    err_sq: dict = field(default_factory=dict)  # group -> sum of its square
    cos_sum: dict = field(default_factory=dict)
    cos: dict = field(default_factory=dict)  # group -> _Thinned


@dataclass
class Scores:
    """Result of :func:`score`: tidy rows, the per-group moments and timing/cost facts."""

    rows: list[dict]
    moments: dict[str, Moments]
    seconds: float
    seconds_per_draw: float


def _slices(problem: Problem) -> dict[str, slice]:
    out, start = {}, 0
    for name, size in zip(problem.group_names, problem.group_sizes):
        out[name] = slice(start, start + size)
        start += size
    out["all"] = slice(0, start)
    return out


def chunk_size(problem: Problem, draws: int, chunk: int | None = None) -> int:
    """Draws per estimator call: ``chunk`` if given, else about 2^21 hidden states per call, at most ``draws``."""
    if chunk is None:
        chunk = max(1, min(draws, 2**21 // max(1, problem.batch_size * sum(problem.widths[1:]))))
    return chunk


def score(estimator: Estimator, problem: Problem, exact_grads: dict[str, torch.Tensor], draws: int,
          generator: torch.Generator, grid: list[int] | None = None, chunk: int | None = None,
          progress=None, level: float = 0.95) -> Scores:
    """Stream ``draws`` draws of ``estimator`` on ``problem`` and score them against ``exact_grads``
    (normal intervals at ``level``, 95% by default)."""
    grid = sorted(set(grid if grid is not None else default_grid(draws)))
    grid = [m for m in grid if 1 <= m <= draws]
    chunk = chunk_size(problem, draws, chunk)
    sl = _slices(problem)
    g = np.concatenate([exact_grads[n].detach().cpu().double().numpy() for n in problem.group_names])
    P = g.size
    mom = {n: Moments(s.stop - s.start) for n, s in sl.items()}
    resid = {n: Moments(1) for n in sl}  # ||g_d - g||^2 per draw
    by_m = [_GroupsOfM(M, np.zeros(P)) for M in grid]
    for gm in by_m:
        for n in sl:
            gm.err_sum[n] = gm.err_sq[n] = gm.cos_sum[n] = 0.0
            gm.cos[n] = _Thinned(QUANTILE_CAP)
    seconds, done = 0.0, 0
    while done < draws:
        c = min(chunk, draws - done)
        t0 = time.perf_counter()
        out = estimator.estimate(problem, c, generator)
        if problem.device.type == "cuda":
            torch.cuda.synchronize(problem.device)
        seconds += time.perf_counter() - t0
        if not isinstance(out, dict) or list(out) != list(problem.group_names):
            raise InputError(f"estimator {estimator.spec} returned groups "
                             f"{list(out) if isinstance(out, dict) else type(out).__name__}, expected "
                             f"{list(problem.group_names)} (the contract: one [D, size] tensor per group)")
        X = torch.cat([out[n] for n in problem.group_names], dim=1).detach().cpu().double().numpy()
        if not np.isfinite(X).all():
            bad = int((~np.isfinite(X)).any(1).sum())
            raise InputError(f"estimator {estimator.spec} returned non-finite estimates in {bad} of {c} draws on "
                             f"{problem.name} (scores would be NaN)")
        with np.errstate(all="ignore"):  # an overflow is reported below as one error, a 0/0 cosine is NaN
            for n, s in sl.items():
                mom[n].update(X[:, s])
                resid[n].update(((X[:, s] - g[s]) ** 2).sum(1))
            _fold_groups(by_m, X, g, sl)
        _check_finite(estimator, problem, X, mom, resid, by_m)
        done += c
        if progress is not None:
            progress(c)
    z = _Z if level == 0.95 else float(NormalDist().inv_cdf(0.5 + level / 2))
    with np.errstate(all="ignore"):  # a zero gradient norm gives NaN relative scores, reported as such
        rows = _rows(problem, estimator, mom, resid, by_m, g, sl, draws, seconds, z)
    return Scores(rows=rows, moments=mom, seconds=seconds, seconds_per_draw=seconds / draws)


def _check_finite(estimator, problem, X, mom, resid, by_m) -> None:
    """Raise :class:`InputError` when the running statistics left float64: finite estimates so large
    that their squares (or the squares of squared errors, for the intervals) overflow."""
    if all(m.finite for m in (*mom.values(), *resid.values())) and all(
            math.isfinite(v) for gm in by_m for v in gm.err_sq.values()):
        return
    raise InputError(f"estimator {estimator.spec}'s estimates on {problem.name} overflow float64 when squared "
                     f"(largest |value| {float(np.abs(X).max()):.3g}; scoring needs squares of squared errors, "
                     f"finite only below about 1e77)")


def _fold_groups(by_m: list[_GroupsOfM], X: np.ndarray, g: np.ndarray, sl: dict[str, slice]) -> None:
    """Complete the M-groups that end inside chunk ``X`` using one prefix sum shared by every M."""
    C = np.cumsum(X, axis=0)
    c = X.shape[0]
    for gm in by_m:
        first = gm.M - gm.carry_n - 1  # row index (in this chunk) that completes the open group
        if first >= c:
            gm.carry_sum += C[-1]
            gm.carry_n += c
            continue
        ends = np.arange(first, c, gm.M)
        sums = C[ends].copy()
        sums[1:] -= C[ends[:-1]]
        sums[0] += gm.carry_sum
        gm.carry_sum = C[-1] - C[ends[-1]]
        gm.carry_n = c - 1 - ends[-1]
        means = sums / gm.M
        gm.groups += len(ends)
        for n, s in sl.items():
            err = ((means[:, s] - g[s]) ** 2).sum(1)
            gm.err_sum[n] += err.sum()
            gm.err_sq[n] += (err**2).sum()
            gn = np.linalg.norm(g[s])
            mn = np.linalg.norm(means[:, s], axis=1)
            cos = (means[:, s] @ g[s]) / (mn * gn)  # NaN where a norm is 0 (errstate set by the caller)
            gm.cos_sum[n] += cos.sum()
            gm.cos[n].add(cos)


def _rows(problem, estimator, mom, resid, by_m, g, sl, N, seconds, z=_Z) -> list[dict]:
    cost = estimator.cost(problem)
    spd = seconds / N
    rows: list[dict] = []

    def add(group, metric, value, M=0, lo=math.nan, hi=math.nan):
        rows.append(dict(problem=problem.name, estimator=estimator.spec, group=group, metric=metric, M=int(M),
                         value=float(value), lo=float(lo), hi=float(hi)))

    for n, s in sl.items():
        m = mom[n]
        var = m.var
        tr = float(var.sum())
        gn = float(np.linalg.norm(g[s]))
        b = m.mean - g[s]
        raw2 = float(b @ b)
        b2 = max(raw2 - tr / N, 0.0)
        se_b2 = math.sqrt(max(2 * float((var**2).sum()) / N**2 + 4 * float((b**2) @ var) / N, 0.0))
        se_tr = math.sqrt(float(resid[n].var[0]) / N)
        rel = (lambda v: v / gn) if gn > 0 else (lambda v: math.nan)
        bias = math.sqrt(b2)
        lo_b, hi_b = math.sqrt(max(b2 - z * se_b2, 0.0)), math.sqrt(b2 + z * se_b2)
        add(n, "grad_norm", gn)
        add(n, "bias_norm", bias, lo=lo_b, hi=hi_b)
        add(n, "rel_bias", rel(bias), lo=rel(lo_b), hi=rel(hi_b))
        add(n, "noise_floor", rel(math.sqrt(tr / N)))
        add(n, "trace_var", tr, lo=max(tr - z * se_tr, 0.0), hi=tr + z * se_tr)
        add(n, "snr", float(np.linalg.norm(m.mean)) / math.sqrt(tr) if tr > 0 else math.nan)
        add(n, "var_x_seconds", tr * spd)
        add(n, "var_x_loss_evals", tr * cost.head_evals)
        for gm in by_m:
            M = gm.M
            mse = b2 + tr / M
            se = math.sqrt((se_tr / M) ** 2 + se_b2**2)
            add(n, "rel_rmse", rel(math.sqrt(mse)), M, rel(math.sqrt(max(mse - z * se, 0.0))), rel(math.sqrt(mse + z * se)))
            G = gm.groups
            if G == 0:
                continue
            emp = gm.err_sum[n] / G
            sd = math.sqrt(max(gm.err_sq[n] / G - emp**2, 0.0) * G / (G - 1)) if G > 1 else math.nan
            half = z * sd / math.sqrt(G) if G > 1 else math.nan
            add(n, "rel_rmse_emp", rel(math.sqrt(emp)), M, rel(math.sqrt(max(emp - half, 0.0))), rel(math.sqrt(emp + half)))
            cos = gm.cos[n].values()
            finite = cos[np.isfinite(cos)]
            add(n, "cos_mean", gm.cos_sum[n] / G, M)
            if finite.size:
                add(n, "cos_q15", float(np.quantile(finite, 0.15)), M)
                add(n, "cos_q85", float(np.quantile(finite, 0.85)), M)
    return rows
