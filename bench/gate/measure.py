r"""Sampling side of the CI gate: seeded, chunked, streamed draws of each estimator on each problem.

For one (problem, estimator) the draws come in chunks of ``design.chunk`` from one
``torch.Generator`` seeded with :func:`task_seed` (a function of the root seed, the problem spec and
the estimator spec only, so adding an estimator never moves another's stream).  Per-coordinate
mean and variance accumulate in float64 (Welford + Chan, :class:`bench.accumulate.Moments`), and
per group the spread of $q_d=\lVert\hat g_d-c\rVert^2$ ($c$ the first chunk's mean) gives the
fourth-moment SE of the trace variance.  Memory does not grow with $N$.

Stopping (variance only, never the mean): every estimator stops once
$N\ge\max(N_{\min},\ \mathrm{safety}\cdot\max_ik_is_i^2(z_c+z_{1-\beta})^2/\delta_i^2)$ or at $N_{\max}$,
with $k_i=1$ for coordinates of declared-unbiased groups (tested against the exact gradient) and
$k_i=2$ for the others (tested against the baseline, whose run has the same spread);
deterministic estimators (every $s_i\le10^{-10}\lVert g\rVert$: rounding only) after one chunk.
The tasks of ``design.paths`` also record whether their code path ran (:data:`PATH_PROBES`).
Cost: $N$ draws of the estimator plus $O(NP)$ float64 work.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from bench.accumulate import Moments
from bench.gate.design import DESIGN, Design, GroupStats, Measurement, Plan, plan_for
from estimators.base import Estimator
from estimators.errors import InputError
from estimators.kernels.psa_fc import fused_runs
from estimators.model import Problem
from reference import build_problem, exact

__all__ = ["Target", "load_targets", "supported", "task_seed", "plan_tasks", "measure", "run_suite", "PATH_PROBES"]

#: Per estimator spec of ``Design.paths``: a counter that grows when its non-default code runs, and
#: what it means when it did not (the compiled kernels fall back to eager silently by design).
PATH_PROBES: dict[str, tuple[Callable[[], int], str]] = {
    "psa:kernel=fused": (fused_runs, "the compiled PSA kernel never ran (it fell back to the eager kernel: no "
                                     "working torch.compile, or weights beyond its exact range)"),
}


@dataclass
class Target:
    """A gate problem with its exact gradient (float64, per group and flattened)."""

    spec: str
    problem: Problem
    exact: dict[str, np.ndarray]

    @property
    def flat(self) -> np.ndarray:
        return np.concatenate([self.exact[n] for n in self.problem.group_names])


def load_targets(design: Design = DESIGN) -> list[Target]:
    """Build the design's problems and those of its paths (float64, CPU) and their exact gradients."""
    out = []
    for spec in dict.fromkeys(design.problems + tuple(p for p, _ in design.paths)):
        problem = build_problem(spec).to(dtype=torch.float64, device="cpu")
        ex = exact(problem)
        out.append(Target(spec, problem, {k: v.detach().double().cpu().numpy() for k, v in ex.grads.items()}))
    return out


def supported(estimator: Estimator, problem: Problem) -> bool:
    try:
        estimator.check(problem)
    except InputError:
        return False
    return True


def task_seed(design: Design, problem_spec: str, estimator_spec: str) -> int:
    """A 63-bit seed from the root seed and the two specs (stable across runs, platforms and registries)."""
    keys = [design.root_seed, zlib.crc32(problem_spec.encode()), zlib.crc32(estimator_spec.encode())]
    return int(np.random.SeedSequence(keys).generate_state(1, np.uint64)[0] >> np.uint64(1))


def plan_tasks(estimators: list[Estimator], targets: list[Target], design: Design = DESIGN
               ) -> tuple[list[tuple[Target, Estimator]], Plan]:
    """The (problem, estimator) pairs the gate runs and the resulting thresholds: every estimator on every
    design problem it supports, except the estimators of ``design.paths``, which run on their paths'
    problems only."""
    by_spec = {t.spec: t for t in targets}
    path_specs = {s for _, s in design.paths}
    tasks = []
    for e in estimators:
        if e.spec in path_specs:
            tasks += [(by_spec[p], e) for p, s in design.paths if s == e.spec and supported(e, by_spec[p].problem)]
        else:
            tasks += [(by_spec[p], e) for p in design.problems if supported(e, by_spec[p].problem)]
    tasks.sort(key=lambda te: list(by_spec).index(te[0].spec))  # problem by problem, as before
    plan = plan_for([list(t.problem.group_sizes) for t, _ in tasks], design)
    return tasks, plan


def _factors(target: Target, declared: tuple[str, ...]) -> np.ndarray:
    """$k_i$ per coordinate: 1 where tested against the exact gradient, 2 against the baseline."""
    return np.concatenate([np.full(target.exact[n].size, 1.0 if n in declared else 2.0)
                           for n in target.problem.group_names])


def _required(mom: Moments, target: Target, factors: np.ndarray, plan: Plan, design: Design) -> float:
    g = target.flat
    if math.sqrt(float(mom.var.max())) <= 1e-10 * float(np.linalg.norm(g)):
        return 0.0  # deterministic: every draw is the same up to rounding
    delta = design.rel_delta * float(np.linalg.norm(g)) / math.sqrt(g.size)
    need = float((factors * mom.var).max()) * (plan.power_factor / delta) ** 2 if delta > 0 else math.inf
    return max(design.n_min, design.safety * need)


def measure(estimator: Estimator, target: Target, plan: Plan, design: Design = DESIGN,
            seed: int | None = None, progress: Callable[[int], None] | None = None) -> Measurement:
    """Stream draws of ``estimator`` on ``target`` until the stopping rule holds; return the statistics."""
    problem = target.problem
    seed = task_seed(design, target.spec, estimator.spec) if seed is None else seed
    gen = torch.Generator(device=problem.device)
    gen.manual_seed(seed)
    names = problem.group_names
    bounds = np.cumsum((0,) + problem.group_sizes)
    slices = {n: slice(int(bounds[i]), int(bounds[i + 1])) for i, n in enumerate(names)}
    mom = Moments(int(bounds[-1]))
    spread = {n: Moments(1) for n in names}
    center = None
    declared = tuple(estimator.unbiased_groups(problem))
    factors = _factors(target, declared)
    probe = PATH_PROBES.get(estimator.spec) if (target.spec, estimator.spec) in design.paths else None
    runs0 = probe[0]() if probe else 0
    seconds = 0.0
    while mom.n < design.n_max:
        t0 = time.perf_counter()
        out = estimator.estimate(problem, design.chunk, gen)
        seconds += time.perf_counter() - t0
        X = torch.cat([out[n] for n in names], dim=1).detach().cpu().double().numpy()
        if not np.all(np.isfinite(X)):
            raise FloatingPointError(f"non-finite gradients after {mom.n} draws")
        mom.update(X)
        center = X.mean(0) if center is None else center
        for n, s in slices.items():
            spread[n].update(((X[:, s] - center[s]) ** 2).sum(1))
        if progress is not None:
            progress(design.chunk)
        if mom.n >= _required(mom, target, factors, plan, design):
            break
    N = mom.n
    groups = {}
    for n, s in slices.items():
        mean, var, g = mom.mean[s], mom.var[s], target.exact[n]
        groups[n] = GroupStats(size=s.stop - s.start, n=N, grad_norm=float(np.linalg.norm(g)),
                               bias_norm=float(np.linalg.norm(mean - g)), noise_floor=math.sqrt(float(var.sum()) / N),
                               trace_var=float(var.sum()), trace_var_se=math.sqrt(float(spread[n].var[0]) / N),
                               mean=mean.copy(), var=var.copy(), exact=g)
    path = probe[1] if probe and probe[0]() == runs0 else ""
    return Measurement(problem=target.spec, estimator=estimator.spec, unbiased_groups=declared, n=N, seed=seed,
                       seconds=seconds, full_grad_norm=float(np.linalg.norm(target.flat)), groups=groups, path=path)


def run_suite(estimators: list[Estimator], design: Design = DESIGN, progress_bar: bool | None = None,
              threads: int = 1) -> tuple[list[Measurement], Plan]:
    """Measure every supported (problem, estimator) pair of the design.

    Runs with ``threads`` torch threads (restored afterwards): the gate's tensors are tiny, and
    intra-op threads mostly spin (measured on a loaded 2-core machine: the whole gate took 40 s of CPU
    with 1 thread and 280 s with 2).
    """
    targets = load_targets(design)
    tasks, plan = plan_tasks(estimators, targets, design)
    out = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tqdm(total=len(tasks), desc="sbn-bench check", unit="task",
                  disable=True if progress_bar is False else None) as bar:
            for target, est in tasks:
                bar.set_postfix_str(f"{est.spec} on {target.problem.name}")
                try:
                    out.append(measure(est, target, plan, design))
                except Exception as exc:  # noqa: BLE001 - a crashing estimator is a regression, not bad input
                    out.append(Measurement(target.spec, est.spec, (), 0, task_seed(design, target.spec, est.spec),
                                           0.0, float(np.linalg.norm(target.flat)),
                                           error=f"{type(exc).__name__}: {exc}".splitlines()[0]))
                bar.update(1)
    finally:
        torch.set_num_threads(before)
    return out, plan
