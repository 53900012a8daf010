r"""The Monte Carlo reference: score an estimator on a network too large to enumerate (``docs/monte-carlo.md``).

The reference gradient $g$ is not computed; it is estimated by an unbiased reference estimator $R$,
chosen per parameter group by a pilot run (:func:`pilot`) as the candidate with the lowest
$\operatorname{tr}\mathrm{Var}\times$ seconds per draw among those that declare the group unbiased
(:meth:`~estimators.base.Estimator.unbiased_groups`).  The reference's draws form one stream per
problem, shared by every estimator scored on it (:func:`prepare_reference`: computed once, cached, its
length set by a budget of draws or seconds); each scored estimator $A$ draws its own stream,
independent of it.  Both are streamed in chunks (vectorised over draws, accumulated in float64).
With $N_A$ draws $A_i$ and $N_R$ draws $R_j$, per group:

- $\widehat{\lVert\mathbb EA\rVert^2}=(\lVert\sum_iA_i\rVert^2-\sum_i\lVert A_i\rVert^2)/(N_A(N_A-1))$ and
  $\widehat{\lVert g\rVert^2}$ of the same form over the $R_j$ (pairs $i\ne j$ only: unbiased);
- $\widehat{\mathbb EA\cdot g}=\sum_iA_i\cdot\sum_jR_j/(N_AN_R)$ (unbiased: the streams are independent);
- $\widehat{\lVert b\rVert^2}=\widehat{\lVert\mathbb EA\rVert^2}-2\,\widehat{\mathbb EA\cdot g}+\widehat{\lVert g\rVert^2}$,
  unbiased for $\lVert\mathbb EA-g\rVert^2$ (the noise of either stream does not enter its mean);
- $\widehat{\operatorname{tr}\mathrm{Var}A}=(\sum_i\lVert A_i\rVert^2-\lVert\sum_iA_i\rVert^2/N_A)/(N_A-1)$.

Metrics (names of :mod:`bench.scoring` where the quantity is the same): ``grad_norm``, ``bias_norm``,
``rel_bias`` $=\sqrt{\lVert b\rVert^2/\lVert g\rVert^2}$, ``trace_var``, ``rel_rmse`` at each $M$
$=\sqrt{(\lVert b\rVert^2+\operatorname{tr}\mathrm{Var}/M)/\lVert g\rVert^2}$, and ``cos_ms`` at each $M$:
the mean-square cosine $\mathbb E[\bar A_M\cdot g]/\sqrt{\mathbb E\lVert\bar A_M\rVert^2\lVert g\rVert^2}$
(not the mean cosine ``cos_mean`` of the exact scorer, which has no unbiased estimate without $g$).
``snr``, ``noise_floor`` and the work-normalised variances need no reference and are computed as the exact
scorer does (``noise_floor`` relative to the estimated $\lVert g\rVert$).

Every metric has a confidence interval from a delete-one-batch jackknife: each stream is split into
$K$ batches (chunk $j$ goes to batch $j\bmod K$, ``batches`` = 16 by default), each statistic is
recomputed with batch $k$ of both streams left out, and the interval is $\hat\theta\pm t_{K-1,1-\alpha/2}\,
\widehat{\mathrm{se}}_{\mathrm{jack}}$ (at ``level`` $=1-\alpha$, 95% by default; $t_{15,0.975}=2.131$).
Ratios are formed before the jackknife and square roots are taken of the interval's ends.
Memory: a ``[K, P]`` float64 array of batch sums per stream ($P$ parameters).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats as _stats

from estimators import inputs, registry
from estimators.base import Estimator
from estimators.errors import InputError
from estimators.model import Problem
from estimators.plugins import code_digest
from reference.exact import check_feasible

from .accumulate import Moments
from .costs import timed_draws
from .scoring import _slices, chunk_size, default_grid

__all__ = ["DEFAULT_CANDIDATES", "Reference", "ReferenceSums", "pilot", "reference_sums", "score_mc", "MCScores",
           "DEFAULT_BATCHES", "uses_mc", "reference_settings", "reference_key", "stream_folder", "stream_path",
           "prepare_reference", "score_task_mc", "check_stream_file"]

#: unbiased (per group) estimators tried by the pilot; PSA and ST take part for the groups they are exact on
DEFAULT_CANDIDATES = ("arm", "disarm", "reinforce-loo", "local-expectation", "local-expectation:shared=True", "muprop",
                      "psa-iw", "psa", "st")
DEFAULT_BATCHES = 16
#: the pilot's first draws of a candidate (its warm-up); a candidate too slow for twice as many more in its
#: time is judged on these alone
PILOT_MIN_DRAWS = 8
#: the fewest reference draws (16 batches of 2); the default is the task's draws, at least this many
MIN_REFERENCE_DRAWS = 32
#: version of how a reference stream is made and stored (pilot, time split, file layout): part of its cache key
STREAM_FORMAT = 1
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
    """An unbiased reference: the estimator that draws each parameter group (``{group: estimator}``), with
    the pilot's table and its seconds per draw of each chosen estimator (by spec)."""

    by_group: dict[str, Estimator]
    pilot_table: list[dict] = field(default_factory=list)
    seconds_per_draw: dict[str, float] = field(default_factory=dict)
    #: per group, a rough ||g||^2 for the time split: ||mean||^2 of the pilot's lowest-variance candidate
    norm2_proxy: dict[str, float] = field(default_factory=dict)

    def calls(self) -> dict[str, list[str]]:
        """The distinct estimators (specs) and the groups each of them draws."""
        calls: dict[str, list[str]] = {}
        for g, e in self.by_group.items():
            calls.setdefault(e.spec, []).append(g)
        return calls

    def draws_per_chunk(self, chunk: int) -> dict[str, int]:
        r"""Draws of each estimator per chunk under a time budget, from the pilot's figures: half of the time
        is split equally between the $G$ groups, half in proportion to each group's need
        $\nu_g=\operatorname{tr}\mathrm{Var}_g\,t_g/\lVert g_g\rVert^2$ (the time that brings its relative noise
        $\operatorname{tr}\mathrm{Var}_g/(N_g\lVert g_g\rVert^2)$ to 1), so $T_g\propto 1/(2G)+\nu_g/(2\sum_h\nu_h)$;
        an estimator gets the largest $T_g$ of its groups, and the one with the most draws per chunk draws
        ``chunk``.  Without a usable $\lVert g_g\rVert^2$ proxy the groups get equal time; without timings
        every estimator draws ``chunk``.  The split only sets the draws' number, never what they estimate."""
        calls = self.calls()
        if not all(self.seconds_per_draw.get(spec, 0) > 0 for spec in calls):
            return dict.fromkeys(calls, chunk)
        tv = {(r["estimator"], r["group"]): r["trace_var"] for r in self.pilot_table if r.get("group")}
        proxy = {g: v for g, v in self.norm2_proxy.items() if v > 0}  # an estimate <= 0 is no proxy
        need = {spec: [tv.get((spec, g), math.nan) * self.seconds_per_draw[spec] / proxy.get(g, math.nan)
                       for g in groups] for spec, groups in calls.items()}
        if all(math.isfinite(x) and x > 0 for v in need.values() for x in v):
            total, G = sum(x for v in need.values() for x in v), sum(len(v) for v in need.values())
            share = {spec: max(0.5 / G + 0.5 * x / total for x in v) for spec, v in need.items()}
        else:  # no usable proxy: equal time per group
            share = {spec: float(len(groups)) for spec, groups in calls.items()}
        rate = {spec: share[spec] / self.seconds_per_draw[spec] for spec in calls}  # draws per unit of time share
        top = max(rate.values())
        return {spec: max(1, round(chunk * r / top)) for spec, r in rate.items()}

    def enough_draws(self, precision: float) -> dict[str, float]:
        r"""Per estimator, the draws after which the reference mean of each of its groups has a standard error
        of at most ``precision`` times the gradient's norm, by the pilot's figures:
        $N_g=\operatorname{tr}\mathrm{Var}_g/(\text{precision}^2\,\lVert g_g\rVert^2)$, the largest over the
        estimator's groups; infinite (no early end) where a group has no usable $\lVert g_g\rVert^2$ proxy.
        Only a budget: what the draws estimate does not depend on it."""
        tv = {(r["estimator"], r["group"]): r["trace_var"] for r in self.pilot_table if r.get("group")}
        out = {}
        for spec, groups in self.calls().items():
            need = []
            for g in groups:
                v, proxy = tv.get((spec, g), math.nan), self.norm2_proxy.get(g, math.nan)
                ok = math.isfinite(v) and math.isfinite(proxy) and proxy > 0
                need.append(v / (precision ** 2 * proxy) if ok else math.inf)
            out[spec] = max(need)
        return out

    def draw_estimator(self, problem: Problem, spec: str, draws: int, generator: torch.Generator) -> np.ndarray:
        """``[draws, P]`` float64 draws of the reference estimator ``spec`` (all columns; the caller keeps its groups')."""
        est = next(e for e in self.by_group.values() if e.spec == spec)
        Y = _flat(problem, est.estimate(problem, draws, generator))
        if not np.isfinite(Y).all():
            raise InputError(f"reference estimator {spec} returned non-finite estimates on {problem.name}")
        return Y

    def record(self) -> dict:
        """What a task stores about this reference (JSON-able)."""
        return dict(kind="mc", by_group={g: e.spec for g, e in self.by_group.items()}, pilot=self.pilot_table,
                    norm2_proxy=self.norm2_proxy)


def pilot(problem: Problem, generator: torch.Generator, candidates=DEFAULT_CANDIDATES, draws: int = 256,
          seconds: float = 5.0) -> Reference:
    r"""Draw ``draws`` draws (fewer where they would take over ``seconds``) of every candidate after
    :data:`PILOT_MIN_DRAWS` first ones, time them, and pick per group the lowest
    $\operatorname{tr}\mathrm{Var}\times$ seconds per draw among the candidates unbiased for that group."""
    sl = _slices(problem)
    best: dict[str, tuple[float, Estimator]] = {}
    table = []
    proxy: dict[str, tuple[float, float]] = {}  # group -> (trace_var, ||mean||^2) of its lowest-variance candidate
    refused: list[str] = []  # why candidates dropped out, for the error if no group is left with one
    for spec in candidates:
        est = registry.get(spec) if isinstance(spec, str) else spec
        try:
            est.check(problem)
        except InputError as exc:
            refused.append(f"{est.spec}: {exc}")
            continue
        groups = [g for g in est.unbiased_groups(problem) if g in problem.group_names]
        if not groups:
            continue
        try:
            warm, out = timed_draws(est, problem, PILOT_MIN_DRAWS, generator, warmup=0)  # sizes the pilot to its budget
            n = int(min(draws, seconds / max(warm, 1e-9)))
            if n >= 2 * PILOT_MIN_DRAWS:  # else the first draws serve (a slow candidate, timed with its warm-up)
                warm, out = timed_draws(est, problem, n, generator, warmup=0)
            spd, X = warm, _flat(problem, out)
        except InputError as exc:  # a candidate too large for this problem (its own size guard) drops out
            table.append(dict(estimator=est.spec, group="", trace_var=math.nan, seconds_per_draw=math.nan,
                              score=math.nan, note=str(exc)))
            refused.append(f"{est.spec}: {exc}")
            continue
        if not np.isfinite(X).all():
            refused.append(f"{est.spec}: non-finite estimates")
            continue
        for g in problem.group_names:
            Xg = X[:, sl[g]]
            tr = float(Xg.var(0, ddof=1).sum())
            if g not in proxy or tr < proxy[g][0]:
                proxy[g] = (tr, float(Xg.mean(0) @ Xg.mean(0)) - tr / len(Xg))
        for g in groups:
            tr = float(X[:, sl[g]].var(0, ddof=1).sum())
            table.append(dict(estimator=est.spec, group=g, trace_var=tr, seconds_per_draw=spd, score=tr * spd))
            if g not in best or tr * spd < best[g][0]:
                best[g] = (tr * spd, est)
    missing = [g for g in problem.group_names if g not in best]
    if missing:
        why = "; ".join(refused[:3]) + (f"; and {len(refused) - 3} more" if len(refused) > 3 else "")
        raise InputError(f"no unbiased reference estimator for groups {', '.join(missing)} of {problem.name} "
                         f"among {', '.join(map(str, candidates))}" + (f" (dropped: {why})" if why else ""))
    chosen = {g: best[g][1] for g in problem.group_names}
    timing = {r["estimator"]: r["seconds_per_draw"] for r in table if r["group"]}
    return Reference(chosen, table, {e.spec: timing[e.spec] for e in chosen.values()},
                     {g: v[1] for g, v in proxy.items()})


@dataclass
class ReferenceSums:
    r"""A stream of reference draws, summed per batch: what scoring needs of the reference, and all it keeps.

    ``S[k]`` is the sum of the draws of batch ``k`` (``[K, P]``), ``Q[k, i]`` the sum of their squared
    norms in group ``i`` and ``n[k, i]`` their number (``[K, G]``, groups in the problem's order: each
    group is drawn by its own estimator, as often as its budget allows).  One stream serves every estimator scored on a problem (:func:`prepare_reference`).
    """

    S: np.ndarray
    Q: np.ndarray
    n: np.ndarray
    record: dict

    @property
    def batches(self) -> int:
        return len(self.n)

    @property
    def draws(self) -> int:
        return int(self.n.sum(0).max())

    def digest(self) -> str:
        """SHA-256 of the sums and the record (stored with them, checked when they are read back)."""
        h = hashlib.sha256()
        for a in (self.S, self.Q, self.n):
            h.update(np.ascontiguousarray(a, np.float64).tobytes())
        h.update(json.dumps({k: v for k, v in self.record.items() if k != "digest"}, sort_keys=True).encode())
        return h.hexdigest()

    def save(self, path: str, replace: bool = False) -> bool:
        """Write atomically (a temporary file in the same folder, then a link or rename); without ``replace``
        an existing file wins (another process made the same stream first) and ``False`` is returned."""
        tmp = f"{path}.{os.getpid()}.tmp"
        record = dict(self.record, digest=self.digest())
        try:
            with open(tmp, "wb") as f:
                np.savez(f, S=self.S, Q=self.Q, n=self.n, record=np.array(json.dumps(record, sort_keys=True)))
            if replace:
                os.replace(tmp, path)
                return True
            try:
                os.link(tmp, path)  # atomic and exclusive: fails when the file exists
            except FileExistsError:
                return False
            return True
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: str, params: int, groups: int, key: str | None = None) -> "ReferenceSums | None":
        """The sums saved at ``path``, or ``None`` when the file is missing, not a reference of this shape, or (with
        ``key``) the stream of other settings: a file copied over another's name is not taken for it."""
        try:
            with np.load(path, allow_pickle=False) as z:
                S, Q, n, rec = z["S"], z["Q"], z["n"], json.loads(str(z["record"]))
        except Exception:  # noqa: BLE001 - any file that does not load (an unknown compression method, an
            return None    # encrypted member, JSON nested too deep, a header asking for 559 GiB) is damaged
        if any(a.dtype.kind not in "fiu" for a in (S, Q, n)) or not isinstance(rec, dict):  # strings, records, complex
            return None
        S, Q, n = S.astype(np.float64), Q.astype(np.float64), n.astype(np.float64)
        if S.shape[1:] != (params,) or Q.shape[1:] != (groups,) or n.shape != Q.shape or len(S) != len(Q) \
                or len(S) < 2 or not np.isfinite(S).all() or not np.isfinite(Q).all() or (Q < 0).any() \
                or not np.isfinite(n).all() or (n < 1).any() or (n != np.round(n)).any():
            return None  # every batch holds a whole, positive number of draws of each group
        out = cls(S, Q, n, rec)
        if rec.pop("digest", None) != out.digest():  # damaged or edited since it was written
            return None
        if key is not None and rec.get("stream_key") != key:  # another stream's file under this name
            return None
        return out


def reference_sums(problem: Problem, reference: Reference, generator: torch.Generator, draws: int | None = None,
                   seconds: float | None = None, batches: int = DEFAULT_BATCHES, chunk: int | None = None,
                   progress=None, precision: float | None = None) -> ReferenceSums:
    """Stream reference draws into :class:`ReferenceSums`: ``draws`` of them (rounded up to equal chunks spread
    evenly over ``batches`` batches), or as many whole rounds of ``batches`` chunks as ``seconds`` allow
    (at least :data:`MIN_REFERENCE_DRAWS` draws of each estimator, at most :data:`~estimators.inputs.MAX_DRAWS`
    draws).  Under a time budget, ``precision`` ends the stream earlier, after the first whole round in which
    every estimator has the draws :meth:`Reference.enough_draws` asks for (fixed by the pilot before the
    stream starts, so the stopping rule does not look at the stream's own draws)."""
    if batches < 2:
        raise InputError(f"the jackknife needs at least 2 batches, got {batches}")
    if (draws is None) == (seconds is None):
        raise InputError("give the reference either a number of draws or a time budget in seconds")
    sl = _slices(problem)
    P, groups = sl["all"].stop, list(problem.group_names)
    c = max(1, min(chunk_size(problem, draws or 2**62, chunk), _ARRAY_CAP // P))
    n_chunks = None  # under a time budget: whole rounds until it is spent
    if draws is not None:
        n_chunks, c = _plan_chunks(draws, batches, c)
    calls = reference.calls()
    if seconds is not None and chunk is None and all(reference.seconds_per_draw.get(e, 0) > 0 for e in calls):
        unit = reference.draws_per_chunk(10**6)  # relative draws; a round of chunks takes at most an 8th of the budget
        per_draw = sum(unit[e] / 10**6 * reference.seconds_per_draw[e] for e in calls)
        c = max(1, min(c, int(seconds / (8 * batches * per_draw))))
    per_chunk = dict.fromkeys(calls, c) if seconds is None else reference.draws_per_chunk(c)
    S, Q, n = np.zeros((batches, P)), np.zeros((batches, len(groups))), np.zeros((batches, len(groups)))
    # a spent time budget still draws whole rounds until every estimator has MIN_REFERENCE_DRAWS (the jackknife's
    # batches need two draws each): a slow estimator of one draw per chunk gets a second round
    min_chunks = batches * math.ceil(MIN_REFERENCE_DRAWS / (batches * min(per_chunk.values())))
    enough = reference.enough_draws(precision) if precision is not None and seconds is not None else {}
    drawn = dict.fromkeys(calls, 0)
    stopped = "draws" if n_chunks is not None else "seconds"
    t0 = time.perf_counter()
    j = 0
    while n_chunks is None or j < n_chunks:
        if n_chunks is None and j % batches == 0 and j >= min_chunks:
            if enough and all(drawn[e] >= enough[e] for e in calls):
                stopped = "precision"
                break
            if time.perf_counter() - t0 > seconds or n.sum(0).max() + batches * c > inputs.MAX_DRAWS:
                break
        k = j % batches
        for spec, its_groups in calls.items():
            m = per_chunk[spec]
            R = reference.draw_estimator(problem, spec, m, generator)
            for g in its_groups:
                i, s = groups.index(g), sl[g]
                S[k, s] += R[:, s].sum(0)
                Q[k, i] += np.einsum("ij,ij->", R[:, s], R[:, s])
                n[k, i] += m
            drawn[spec] += m
            if progress is not None:
                progress(m)
        j += 1
    spent = time.perf_counter() - t0
    if not (np.isfinite(S).all() and np.isfinite(Q).all()):
        raise InputError(f"the reference estimates on {problem.name} are too large to use (their squares overflow "
                         f"float64)")
    record = dict(reference.record(), draws=int(n.sum(0).max()),
                  draws_by_group={g: int(v) for g, v in zip(groups, n.sum(0))}, batches=batches, seconds=spent,
                  budget=dict(draws=draws, seconds=seconds, precision=precision), stopped_by=stopped)
    return ReferenceSums(S, Q, n, record)


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


def score_mc(estimator: Estimator, problem: Problem, reference: "Reference | ReferenceSums", draws: int,
             generator: torch.Generator, ref_generator: torch.Generator | None = None, grid: list[int] | None = None,
             chunk: int | None = None, batches: int = DEFAULT_BATCHES, level: float = 0.95,
             seconds: float | None = None, progress=None) -> MCScores:
    """Stream draws of ``estimator`` and score them against ``reference`` (module docstring).

    ``reference`` is a stream already summed (:class:`ReferenceSums`, shared by the estimators of a
    problem), or a :class:`Reference` whose ``draws`` draws are then streamed here from ``ref_generator``.
    The estimator's ``draws`` are rounded up to equal chunks spread evenly over the reference's batches;
    with ``seconds`` the stream stops early after the first whole round of chunks past that budget."""
    if not 0 < level < 1:
        raise InputError(f"confidence level must be in (0, 1), got {level}")
    if isinstance(reference, Reference):
        reference = reference_sums(problem, reference, ref_generator, draws=draws, batches=batches, chunk=chunk)
    batches = reference.batches
    sl = _slices(problem)
    P = sl["all"].stop
    chunk = max(1, min(chunk_size(problem, draws, chunk), _ARRAY_CAP // P))
    n_chunks, c = _plan_chunks(draws, batches, chunk)
    groups = list(problem.group_names)
    SA, QA, nA = np.zeros((batches, P)), np.zeros((batches, len(groups))), np.zeros(batches)
    mom = {g: Moments(s.stop - s.start) for g, s in sl.items()}
    t_a = 0.0
    done = 0
    for j in range(n_chunks):
        if seconds is not None and j % batches == 0 and j > 0 and t_a > seconds:
            break
        k = j % batches
        t0 = time.perf_counter()
        A = _flat(problem, estimator.estimate(problem, c, generator))
        if problem.device.type == "cuda":
            torch.cuda.synchronize(problem.device)
        t_a += time.perf_counter() - t0
        if not np.isfinite(A).all():
            raise InputError(f"estimator {estimator.spec} returned non-finite estimates on {problem.name}")
        SA[k] += A.sum(0)
        for i, g in enumerate(groups):
            QA[k, i] += np.einsum("ij,ij->", A[:, sl[g]], A[:, sl[g]])
        for g, s in sl.items():
            mom[g].update(A[:, s])
        nA[k] += c
        done += c
        if progress is not None:
            progress(c)
    if not (np.isfinite(SA).all() and np.isfinite(QA).all()):  # finite draws whose squares overflow (1e200)
        raise InputError(f"estimator {estimator.spec} returned estimates too large to score on {problem.name} "
                         f"(their squares overflow float64)")
    grid = sorted(set(grid if grid is not None else default_grid(done)))
    grid = [m for m in grid if m >= 1]
    spd = t_a / done
    rows = _rows(problem, estimator, sl, (SA, QA, nA), reference, grid, level)
    rows += _work_rows(problem, estimator, mom, rows, spd)
    return MCScores(rows=rows, moments=mom, reference=dict(reference.record, level=level),
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


def _rows(problem, estimator, sl, scored, reference: ReferenceSums, grid, level) -> list[dict]:
    """Scores with jackknife intervals; the unit left out is batch ``k`` of both streams (A's and R's).
    Each group's estimates use its own number of reference draws; ``all`` sums the groups' estimates
    (every estimate is a sum over coordinates) before the ratios are formed."""
    SA, QA, nA = scored
    SR, QR, nR = reference.S, reference.Q, reference.n
    used = (nA > 0) & (nR > 0).all(1)
    SA, QA, nA, SR, QR, nR = SA[used], QA[used], nA[used], SR[used], QR[used], nR[used]
    K = len(nA)
    if K < 2:
        raise InputError("the Monte Carlo reference needs at least two batches of draws")
    t = float(_stats.t.ppf(0.5 + level / 2, K - 1))
    NA = _leave_one_out(nA.sum(), nA)  # [K+1]
    SA_j, SR_j = _leave_one_out(SA.sum(0), SA), _leave_one_out(SR.sum(0), SR)
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

    parts: dict[str, tuple] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, g in enumerate(problem.group_names):
            s = sl[g]
            NR = _leave_one_out(nR[:, i].sum(), nR[:, i])
            na2 = np.einsum("ij,ij->i", SA_j[:, s], SA_j[:, s])
            nr2 = np.einsum("ij,ij->i", SR_j[:, s], SR_j[:, s])
            dot = np.einsum("ij,ij->i", SA_j[:, s], SR_j[:, s])
            qa, qr = _leave_one_out(QA[:, i].sum(), QA[:, i]), _leave_one_out(QR[:, i].sum(), QR[:, i])
            ea2 = (na2 - qa) / (NA * (NA - 1))  # ||E A||^2, pairs i != j of A's draws
            g2 = (nr2 - qr) / (NR * (NR - 1))  # ||g||^2, pairs of R's draws
            eag = dot / (NA * NR)  # E A . g: the streams are independent
            parts[g] = (ea2, g2, eag, ea2 - 2 * eag + g2, (qa - na2 / NA) / (NA - 1))
        parts["all"] = tuple(sum(v[q] for v in parts.values()) for q in range(5))
        for g in sl:
            ea2, g2, eag, b2, tr = parts[g]
            add(g, "grad_norm", g2, sqrt=True)
            add(g, "bias_norm", b2, sqrt=True)
            add(g, "rel_bias", np.where(g2 > 0, b2 / g2, np.nan), sqrt=True)
            add(g, "trace_var", tr)
            for M in grid:
                add(g, "rel_rmse", np.where(g2 > 0, (b2 + tr / M) / g2, np.nan), M, sqrt=True)
                den = (ea2 + tr / M) * g2
                add(g, "cos_ms", np.where(den > 0, eag / np.sqrt(np.abs(den)), np.nan), M)
    return rows


def hash_spec(text: str) -> int:
    """A stable 32-bit hash of a problem spec (Python's ``hash`` of a string changes per process)."""
    return zlib.crc32(text.encode())


def _spawn(task: dict, stream: int) -> int:
    """A 63-bit seed for the reference's ``stream`` (1: draws, 2: pilot) of the task's problem and run."""
    ss = np.random.SeedSequence(abs(hash_spec(task["problem"])), spawn_key=(task.get("root_seed") or 0, stream))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def reference_settings(task: dict) -> dict:
    """What determines a task's reference stream (JSON-able): problem (spec and content), run seed, dtype,
    device, the reference budget (``task["mc"]``: ``draws`` or ``seconds``, with ``seconds`` an optional
    ``precision``; default: as many draws as the task's own), batches, pilot candidates, the estimators' code and :data:`STREAM_FORMAT`."""
    budget = dict(task.get("mc") or {})
    if budget.get("draws") is None and budget.get("seconds") is None:
        budget["draws"] = max(task["draws"], MIN_REFERENCE_DRAWS)
    out = dict(problem=task["problem"], problem_digest=task.get("problem_digest"), root_seed=task.get("root_seed"),
               dtype=task["dtype"], device=task["device"], draws=budget.get("draws"), seconds=budget.get("seconds"),
               batches=DEFAULT_BATCHES, candidates=list(DEFAULT_CANDIDATES), code=code_digest(), format=STREAM_FORMAT)
    if budget.get("precision") is not None:  # absent unless set: the keys of streams made without it stay
        out["precision"] = budget["precision"]
    return out


def stream_folder(cache_dir: str) -> str:
    """The folder of the cached reference streams in a sweep's cache (``sbn_checkpoints`` beside the store)."""
    return os.path.join(cache_dir, "mc-references")


def stream_path(task: dict, cache_dir: str) -> str:
    """Where the reference stream of ``task``'s problem is cached."""
    return os.path.join(stream_folder(cache_dir), f"{reference_key(task)}.npz")


def reference_key(task: dict) -> str:
    """The file name stem of a task's reference stream in the cache: a hash of :func:`reference_settings`."""
    return hashlib.sha256(json.dumps(reference_settings(task), sort_keys=True).encode()).hexdigest()[:20]


def check_stream_file(path: str) -> None:
    """Refuse a cache entry that this sweep would not write or replace: a link, folder, pipe or device, or a
    SQLite file (a results store copied or linked there would be replaced by the stream)."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isfile(path):
        raise InputError(f"the Monte Carlo reference cache {path} is a link, folder, pipe or device, not a file "
                         f"this sweep wrote; remove it and rerun")
    if inputs.is_sqlite_file(path):
        raise InputError(f"the Monte Carlo reference cache {path} is a SQLite database (a results store?), not a "
                         f"stream this sweep wrote; move it away and rerun")


_STREAMS: dict[str, ReferenceSums] = {}  # in-process: the last stream used (a wide network's is tens of MB)


def prepare_reference(task: dict, problem: Problem, cache_dir: str | None = None, progress=None) -> ReferenceSums:
    r"""The reference stream of ``task``'s problem, shared by every estimator scored on it: loaded from
    ``cache_dir/mc-references/KEY.npz`` when present, else computed — a pilot (:func:`pilot`, seeded by
    problem and run, its per-candidate time a 20th of a ``seconds`` budget, at most 5 s) picks the
    estimator per group, then :func:`reference_sums` streams the budget's draws (under a time budget, what
    the pilot left of it and at least half) — and saved there atomically; a file that another process
    saved meanwhile wins and is used instead.  ``problem`` is the problem in the task's dtype and device."""
    key = reference_key(task)
    if key in _STREAMS:
        return _STREAMS[key]
    sl = _slices(problem)
    path = stream_path(task, cache_dir) if cache_dir is not None else None
    if path is not None:
        check_stream_file(path)
    damaged = path is not None and os.path.exists(path)  # until it loads
    sums = ReferenceSums.load(path, sl["all"].stop, len(problem.group_names), key) if damaged else None
    if sums is None:
        s = reference_settings(task)
        dev = problem.device
        t0 = time.perf_counter()
        pilot_s = min(5.0, s["seconds"] / 20) if s["seconds"] is not None else 5.0
        ref = pilot(problem, torch.Generator(device=dev).manual_seed(_spawn(task, 2)), seconds=pilot_s,
                    draws=256 if s["seconds"] is not None else max(32, min(256, s["draws"] // 20)))
        spent = time.perf_counter() - t0
        # the draws get what the pilot left, and at least half the budget where the pilot overran
        seconds = max(s["seconds"] - spent, s["seconds"] / 2) if s["seconds"] is not None else None
        sums = reference_sums(problem, ref, torch.Generator(device=dev).manual_seed(_spawn(task, 1)),
                              draws=s["draws"], seconds=seconds, progress=progress, precision=s.get("precision"))
        sums.record.update(pilot_seconds=spent, budget=dict(draws=s["draws"], seconds=s["seconds"],
                                                            precision=s.get("precision")), stream_key=key)
        if path is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not sums.save(path, replace=damaged):  # a damaged file is replaced ...
                won = ReferenceSums.load(path, sl["all"].stop, len(problem.group_names), key)
                sums = won if won is not None else sums  # ... another process's stream, made meanwhile, is used
    _STREAMS.clear()
    _STREAMS[key] = sums
    return sums


def score_task_mc(task: dict, est: Estimator, problem: Problem, progress=None, cache_dir: str | None = None) -> MCScores:
    """A sweep task's scores against the Monte Carlo reference: the problem's shared reference stream
    (:func:`prepare_reference`), then ``task["draws"]`` draws of ``est`` on a generator seeded by the task."""
    sums = prepare_reference(task, problem, cache_dir)
    gen = torch.Generator(device=problem.device).manual_seed(task["seed"])
    return score_mc(est, problem, sums, task["draws"], gen, grid=task["grid"], chunk=task["chunk"], progress=progress)
