r"""The Monte Carlo reference: score an estimator on a network too large to enumerate (``docs/monte-carlo.md``).

The reference gradient $g$ is not computed; it is estimated by an unbiased reference estimator $R$,
chosen per parameter group by a pilot run (:func:`pilot`) as the candidate with the lowest
$\operatorname{tr}\mathrm{Var}\times$ seconds per draw among those that declare the group unbiased
(:meth:`~estimators.base.Estimator.unbiased_groups`).  Draws of the scored estimator $A$ and of $R$ are
paired ($A_i$, $R_i$ independent) and streamed in chunks (vectorised over draws, accumulated in float64).
With $d_i=A_i-R_i$ and $N$ pairs, per group:

- $\widehat{\lVert b\rVert^2}=(\lVert\sum_id_i\rVert^2-\sum_i\lVert d_i\rVert^2)/(N(N-1))$, unbiased for
  $\lVert\mathbb EA-g\rVert^2$ (the noise of $R$ does not enter it);
- $\widehat{\lVert g\rVert^2}$: the same form over the reference draws $R_i$;
- $\widehat{\operatorname{tr}\mathrm{Var}A}=(\sum_i\lVert A_i\rVert^2-\lVert\sum_iA_i\rVert^2/N)/(N-1)$;
- $\widehat{\mathbb EA\cdot g}=\sum_{i\ne j}A_i\cdot R_j/(N(N-1))$ and $\widehat{\lVert\mathbb EA\rVert^2}$ as above
  (pairs $i\ne j$ only, so every estimate stays unbiased if $A_i$ and $R_i$ ever share random numbers).

Metrics (names of :mod:`bench.scoring` where the quantity is the same): ``grad_norm``, ``bias_norm``,
``rel_bias`` $=\sqrt{\lVert b\rVert^2/\lVert g\rVert^2}$, ``trace_var``, ``rel_rmse`` at each $M$
$=\sqrt{(\lVert b\rVert^2+\operatorname{tr}\mathrm{Var}/M)/\lVert g\rVert^2}$, and ``cos_ms`` at each $M$:
the mean-square cosine $\mathbb E[\bar A_M\cdot g]/\sqrt{\mathbb E\lVert\bar A_M\rVert^2\lVert g\rVert^2}$
(not the mean cosine ``cos_mean`` of the exact scorer, which has no unbiased estimate without $g$).
``snr``, ``noise_floor`` and the work-normalised variances need no reference and are computed as the exact
scorer does (``noise_floor`` relative to the estimated $\lVert g\rVert$).

Every metric has a confidence interval from a delete-one-batch jackknife: draws are split into
$K$ batches (chunk $j$ goes to batch $j\bmod K$, ``batches`` = 16 by default), each statistic is
recomputed with one batch left out, and the interval is $\hat\theta\pm t_{K-1,1-\alpha/2}\,
\widehat{\mathrm{se}}_{\mathrm{jack}}$ (at ``level`` $=1-\alpha$, 95% by default; $t_{15,0.975}=2.131$).
Ratios are formed before the jackknife and square roots are taken of the interval's ends.
Memory: two ``[K, P]`` float64 arrays of batch sums ($P$ parameters).
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats as _stats

from estimators import registry
from estimators.base import Estimator
from estimators.errors import InputError
from estimators.model import Problem
from reference.exact import check_feasible

from .accumulate import Moments
from .scoring import _slices, default_grid

__all__ = ["DEFAULT_CANDIDATES", "Reference", "pilot", "score_mc", "MCScores", "DEFAULT_BATCHES", "uses_mc",
           "score_task_mc"]

#: unbiased (per group) estimators tried by the pilot; PSA and ST take part for the groups they are exact on
DEFAULT_CANDIDATES = ("arm", "disarm", "reinforce-loo", "local-expectation", "muprop", "psa", "st")
DEFAULT_BATCHES = 16
_ARRAY_CAP = 2**24  # float64 entries per [chunk, P] array of draws (128 MiB)


def uses_mc(reference: str, problem: Problem, method: str, budget: int) -> bool:
    """Whether a sweep's ``reference`` setting (``auto``, ``exact``, ``mc``) scores ``problem`` by Monte Carlo:
    always for ``mc``, never for ``exact``, and for ``auto`` when the exact reference does not fit ``budget``."""
    if reference != "auto":
        return reference == "mc"
    try:
        check_feasible(problem, method, budget)
    except InputError:
        return True
    return False


def _flat(problem: Problem, out: dict[str, torch.Tensor]) -> np.ndarray:
    X = torch.cat([out[n] for n in problem.group_names], dim=1).detach().cpu().double().numpy()
    return X


@dataclass
class Reference:
    """An unbiased reference: the estimator that draws each parameter group (``{group: estimator}``)."""

    by_group: dict[str, Estimator]
    pilot_table: list[dict] = field(default_factory=list)

    def draw(self, problem: Problem, draws: int, generator: torch.Generator) -> np.ndarray:
        """``[draws, P]`` float64 reference draws; one call per distinct estimator, columns picked per group."""
        sl = _slices(problem)
        X = np.empty((draws, sl["all"].stop))
        for spec, groups in self._calls().items():
            est = next(e for g, e in self.by_group.items() if e.spec == spec)
            Y = _flat(problem, est.estimate(problem, draws, generator))
            if not np.isfinite(Y).all():
                raise InputError(f"reference estimator {spec} returned non-finite estimates on {problem.name}")
            for g in groups:
                X[:, sl[g]] = Y[:, sl[g]]
        return X

    def _calls(self) -> dict[str, list[str]]:
        calls: dict[str, list[str]] = {}
        for g, e in self.by_group.items():
            calls.setdefault(e.spec, []).append(g)
        return calls

    def record(self) -> dict:
        """What a task stores about this reference (JSON-able)."""
        return dict(kind="mc", by_group={g: e.spec for g, e in self.by_group.items()}, pilot=self.pilot_table)


def pilot(problem: Problem, generator: torch.Generator, candidates=DEFAULT_CANDIDATES, draws: int = 256,
          seconds: float = 5.0) -> Reference:
    r"""Draw ``draws`` draws (fewer, at least 16, where they would take over ``seconds``) of every candidate,
    time them, and pick per group the lowest
    $\operatorname{tr}\mathrm{Var}\times$ seconds per draw among the candidates unbiased for that group."""
    sl = _slices(problem)
    best: dict[str, tuple[float, Estimator]] = {}
    table = []
    for spec in candidates:
        est = registry.get(spec) if isinstance(spec, str) else spec
        try:
            est.check(problem)
        except InputError:
            continue
        groups = [g for g in est.unbiased_groups(problem) if g in problem.group_names]
        if not groups:
            continue
        t0 = time.perf_counter()
        try:
            est.estimate(problem, 4, generator)  # warm-up (allocations, kernels), also sizes the pilot to its budget
            n = int(min(draws, max(16, seconds / max((time.perf_counter() - t0) / 4, 1e-9))))
            t0 = time.perf_counter()
            X = _flat(problem, est.estimate(problem, n, generator))
        except InputError as exc:  # a candidate too large for this problem (its own size guard) drops out
            table.append(dict(estimator=est.spec, group="", trace_var=math.nan, seconds_per_draw=math.nan,
                              score=math.nan, note=str(exc)))
            continue
        if problem.device.type == "cuda":
            torch.cuda.synchronize(problem.device)
        spd = (time.perf_counter() - t0) / n
        if not np.isfinite(X).all():
            continue
        for g in groups:
            tr = float(X[:, sl[g]].var(0, ddof=1).sum())
            table.append(dict(estimator=est.spec, group=g, trace_var=tr, seconds_per_draw=spd, score=tr * spd))
            if g not in best or tr * spd < best[g][0]:
                best[g] = (tr * spd, est)
    missing = [g for g in problem.group_names if g not in best]
    if missing:
        raise InputError(f"no unbiased reference estimator for groups {', '.join(missing)} of {problem.name} "
                         f"among {', '.join(map(str, candidates))}")
    return Reference({g: best[g][1] for g in problem.group_names}, table)


@dataclass
class MCScores:
    """Result of :func:`score_mc`: tidy rows (with CIs), moments of A, the reference's record and timing."""

    rows: list[dict]
    moments: dict[str, Moments]
    reference: dict
    draws: int
    seconds: float
    seconds_per_draw: float


def _plan_chunks(draws: int, batches: int, cap: int) -> tuple[int, int]:
    """(number of chunks, draws per chunk): a multiple of ``batches`` chunks of equal size, at least ``draws`` draws."""
    rounds = max(1, math.ceil(draws / (batches * cap)))
    n_chunks = batches * rounds
    return n_chunks, max(1, math.ceil(draws / n_chunks))


def score_mc(estimator: Estimator, problem: Problem, reference: Reference, draws: int,
             generator: torch.Generator, ref_generator: torch.Generator, grid: list[int] | None = None,
             chunk: int | None = None, batches: int = DEFAULT_BATCHES, level: float = 0.95,
             seconds: float | None = None, progress=None) -> MCScores:
    """Stream paired draws of ``estimator`` and ``reference`` and score them (module docstring).

    ``draws`` is rounded up to equal chunks spread evenly over ``batches`` batches; with ``seconds``
    the stream stops early after the first whole round of ``batches`` chunks past that budget."""
    if batches < 2:
        raise InputError(f"the jackknife needs at least 2 batches, got {batches}")
    if not 0 < level < 1:
        raise InputError(f"confidence level must be in (0, 1), got {level}")
    if chunk is None:
        chunk = max(1, min(draws, 2**21 // max(1, problem.batch_size * sum(problem.widths[1:]))))
    sl = _slices(problem)
    P = sl["all"].stop
    chunk = max(1, min(chunk, _ARRAY_CAP // P))  # A, R and A - R are [chunk, P] float64 each
    n_chunks, c = _plan_chunks(draws, batches, chunk)
    groups = list(sl)
    Sd, SR = np.zeros((batches, P)), np.zeros((batches, P))
    Q = {k: np.zeros((batches, len(groups))) for k in ("d", "R", "A", "AR")}
    n = np.zeros(batches)
    mom = {g: Moments(s.stop - s.start) for g, s in sl.items()}
    t_a = t_all = 0.0
    done = 0
    for j in range(n_chunks):
        if seconds is not None and j % batches == 0 and j > 0 and t_all > seconds:
            break
        k = j % batches
        t0 = time.perf_counter()
        A = _flat(problem, estimator.estimate(problem, c, generator))
        if problem.device.type == "cuda":
            torch.cuda.synchronize(problem.device)
        t_a += time.perf_counter() - t0
        if not np.isfinite(A).all():
            raise InputError(f"estimator {estimator.spec} returned non-finite estimates on {problem.name}")
        R = reference.draw(problem, c, ref_generator)
        t_all += time.perf_counter() - t0
        D = A - R
        Sd[k] += D.sum(0)
        SR[k] += R.sum(0)
        for i, g in enumerate(groups):
            s = sl[g]
            Q["d"][k, i] += np.einsum("ij,ij->", D[:, s], D[:, s])
            Q["R"][k, i] += np.einsum("ij,ij->", R[:, s], R[:, s])
            Q["A"][k, i] += np.einsum("ij,ij->", A[:, s], A[:, s])
            Q["AR"][k, i] += np.einsum("ij,ij->", A[:, s], R[:, s])
            mom[g].update(A[:, s])
        n[k] += c
        done += c
        if progress is not None:
            progress(c)
    grid = sorted(set(grid if grid is not None else default_grid(done)))
    grid = [m for m in grid if m >= 1]
    spd = t_a / done
    rows = _rows(problem, estimator, sl, Sd, SR, Q, n, grid, level)
    rows += _work_rows(problem, estimator, mom, rows, spd)
    return MCScores(rows=rows, moments=mom, reference=dict(reference.record(), draws=done, batches=batches,
                                                           level=level, seconds=t_all),
                    draws=done, seconds=t_a, seconds_per_draw=spd)


def _work_rows(problem, estimator, mom, rows, spd) -> list[dict]:
    r"""The scores that need no reference, as the exact scorer defines them (no intervals): ``snr``,
    ``var_x_seconds``, ``var_x_loss_evals``, and ``noise_floor`` relative to the estimated $\lVert g\rVert$."""
    evals = estimator.cost(problem).head_evals
    gn = {r["group"]: r["value"] for r in rows if r["metric"] == "grad_norm"}
    out = []
    for g, m in mom.items():
        tr = float(m.var.sum())
        floor = math.sqrt(tr / m.n) / gn[g] if gn.get(g, 0) > 0 else math.nan
        for metric, value in (("noise_floor", floor),
                              ("snr", float(np.linalg.norm(m.mean)) / math.sqrt(tr) if tr > 0 else math.nan),
                              ("var_x_seconds", tr * spd), ("var_x_loss_evals", tr * evals)):
            out.append(dict(problem=problem.name, estimator=estimator.spec, group=g, metric=metric, M=0,
                            value=float(value), lo=math.nan, hi=math.nan))
    return out


def _leave_one_out(total: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """Row 0: ``total``; row 1 + k: ``total - parts[k]``."""
    return np.concatenate([total[None], total[None] - parts], axis=0)


def _rows(problem, estimator, sl, Sd, SR, Q, n, grid, level) -> list[dict]:
    K = len(n)
    used = n > 0
    Sd, SR, n = Sd[used], SR[used], n[used]
    Q = {k: v[used] for k, v in Q.items()}
    K = len(n)
    if K < 2:
        raise InputError("the Monte Carlo reference needs at least two batches of draws")
    t = float(_stats.t.ppf(0.5 + level / 2, K - 1))
    N = _leave_one_out(n.sum(), n)  # [K+1]
    Sd_j = _leave_one_out(Sd.sum(0), Sd)
    SR_j = _leave_one_out(SR.sum(0), SR)
    SA_j = Sd_j + SR_j
    rows: list[dict] = []

    def add(group, metric, est, M=0, sqrt=False):
        """``est`` is [K+1] (full, then leave-one-out); CI by the jackknife, optionally mapped through sqrt."""
        full, loo = est[0], est[1:]
        if not np.isfinite(est).all():
            value, lo, hi = float(full), math.nan, math.nan
        else:
            se = math.sqrt((K - 1) / K * float(((loo - loo.mean()) ** 2).sum()))
            value, lo, hi = float(full), float(full) - t * se, float(full) + t * se
        if sqrt:
            value, lo, hi = (math.sqrt(max(v, 0.0)) if np.isfinite(v) else math.nan for v in (value, lo, hi))
        rows.append(dict(problem=problem.name, estimator=estimator.spec, group=group, metric=metric, M=int(M),
                         value=value, lo=lo, hi=hi))

    pairs = N * (N - 1)
    for i, (g, s) in enumerate(sl.items()):
        nd2 = np.einsum("ij,ij->i", Sd_j[:, s], Sd_j[:, s])
        nr2 = np.einsum("ij,ij->i", SR_j[:, s], SR_j[:, s])
        na2 = np.einsum("ij,ij->i", SA_j[:, s], SA_j[:, s])
        dot = np.einsum("ij,ij->i", SA_j[:, s], SR_j[:, s])
        Qd, QR, QA, QAR = (_leave_one_out(Q[k][:, i].sum(), Q[k][:, i]) for k in ("d", "R", "A", "AR"))
        b2 = (nd2 - Qd) / pairs
        g2 = (nr2 - QR) / pairs
        tr = (QA - na2 / N) / (N - 1)
        ea2 = (na2 - QA) / pairs
        eag = (dot - QAR) / pairs
        with np.errstate(invalid="ignore", divide="ignore"):
            add(g, "grad_norm", g2, sqrt=True)
            add(g, "bias_norm", b2, sqrt=True)
            add(g, "rel_bias", np.where(g2 > 0, b2 / g2, np.nan), sqrt=True)
            add(g, "trace_var", tr)
            for M in grid:
                add(g, "rel_rmse", np.where(g2 > 0, (b2 + tr / M) / g2, np.nan), M, sqrt=True)
                den = (ea2 + tr / M) * g2
                add(g, "cos_ms", np.where(den > 0, eag / np.sqrt(np.abs(den)), np.nan), M)
    return rows


_PILOTS: dict[tuple, Reference] = {}


def hash_spec(text: str) -> int:
    """A stable 32-bit hash of a problem spec (Python's ``hash`` of a string changes per process)."""
    return zlib.crc32(text.encode())


def score_task_mc(task: dict, est: Estimator, problem: Problem, progress=None) -> MCScores:
    """A sweep task's scores against the Monte Carlo reference: a pilot (one per problem and run, cached in
    the process, seeded from the problem spec and the run's root seed) picks the reference, then
    :func:`score_mc` streams ``task["draws"]`` paired draws on generators spawned from the task's seed."""
    gen = torch.Generator(device=problem.device).manual_seed(task["seed"])
    ref_seed = int(np.random.SeedSequence(task["seed"], spawn_key=(1,)).generate_state(1, np.uint64)[0] >> np.uint64(1))
    rgen = torch.Generator(device=problem.device).manual_seed(ref_seed)
    ident = (task["problem"], task.get("root_seed"), task["dtype"], task["device"])
    if ident not in _PILOTS:  # one pilot per problem and run in each worker process, seeded by both
        pseed = int(np.random.SeedSequence(abs(hash_spec(task["problem"])), spawn_key=(task.get("root_seed") or 0, 2))
                    .generate_state(1, np.uint64)[0] >> np.uint64(1))
        _PILOTS[ident] = pilot(problem, torch.Generator(device=problem.device).manual_seed(pseed),
                               draws=max(32, min(256, task["draws"] // 20)))
    ref = _PILOTS[ident]
    return score_mc(est, problem, ref, task["draws"], gen, rgen, grid=task["grid"], chunk=task["chunk"],
                    progress=progress)
