r"""``check_estimator``: put any estimator through the contract, one named check at a time.

Each check is a function of a :class:`Context` returning :class:`Verdict` rows (``ok``, ``fail`` or
``skip`` with a one-line detail); :func:`check_estimator` runs them all and returns a
:class:`Report`.  ``sbn-bench validate SPEC`` prints the verdicts and exits 0 (all hold), 1 (a
check failed) or 2 (bad input); the pytest plugin (:mod:`bench.pytest_plugin`) turns the same
checks into test parameters.  The built-in estimators are tested through exactly these checks.

Checks (``CHECKS``):

- ``output``: one ``[D, size]`` tensor per parameter group, named and ordered as the problem's
  groups, in the problem's dtype (float32 and float64) and on its device;
- ``determinism``: the same generator state gives identical draws; two calls give different draws
  unless the estimator has zero variance;
- ``draws-in-one-call``: ``D`` draws in one call are distributed like ``D`` single-draw calls
  (two-sample $z$-test of the means per coordinate);
- ``declared-support``: every declared encoding, noise and loss works, every other one is refused
  with :class:`~estimators.errors.InputError`;
- ``from-path``: with ``has_from_path``, :meth:`estimate` equals :meth:`from_path` of the path it
  sampled (the same generator state);
- ``path-determinism``: a declared path-deterministic estimator is exactly a function of the path
  (two generators, one path, equal estimates), its exact moments by enumeration of all paths exist,
  and its sampled mean agrees with them ($z$-test);
- ``unbiasedness``: every group the estimator declares unbiased
  (:meth:`~estimators.base.Estimator.unbiased_groups`: all groups of an unbiased estimator, PSA's
  last hidden layer and head, the straight-through family's head) gets $z$-tests against the exact
  gradient with a designed false-fail rate and an asserted power; for the other groups the measured
  relative bias is reported;
- ``finite``: finite output on a saturated network ($|a|\approx50$);
- ``cost``: :meth:`cost` returns non-negative finite counts.

**Statistical design.** Each estimator's run has a family-wise false-fail rate $\alpha=10^{-3}$ (Bonferroni
over every coordinate of every statistical check: half to ``unbiasedness``, a quarter each to
``draws-in-one-call`` and ``path-determinism``).  ``unbiasedness`` chooses $N$ from a pilot run as
$1.5((z_{1-\alpha'/2m}+z_{1-\beta})s_{\max}/\delta)^2$ with $\beta=10^{-3}$ and
$\delta=r\lVert g_{\rm group}\rVert/\sqrt{\rm size}$, $r=0.1$, and asserts
$\mathrm{SE}(z_{1-\alpha'/2m}+z_{1-\beta})\le\delta$ on the final sample: a bias of $\delta$ in any
coordinate fails with probability $\ge1-\beta$ (``docs/gate.md#design``).  An estimator whose
variance needs more than ``max_draws`` draws fails the check as underpowered.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from scipy.stats import norm

from bench.accumulate import Moments
from estimators import registry
from estimators.base import Cost, Estimator
from estimators.errors import EstimatorError, InputError, one_line
from estimators.model import sample_path
from estimators.model.losses import LOSSES
from estimators.model.noise import NOISES
from estimators.model.problem import ENCODINGS, Problem
from reference.exact import exact
from reference.moments import MAX_PATHS, path_moments
from reference.problems import build_problem

__all__ = ["CHECKS", "Context", "Report", "Verdict", "check_estimator", "check_names"]

ALPHA, BETA, R = 1e-3, 1e-3, 0.1
#: the problems: small enough for exact gradients and path enumeration, no vanishing group gradient
PROBLEM = "random:widths=2-3-3,points=8,seed=20"
SATURATED = "random:widths=2-3-3,points=4,scale=25,seed=3"


@dataclass
class Verdict:
    check: str
    verdict: str  # "ok", "fail" or "skip"
    detail: str = ""


@dataclass
class Report:
    """The verdicts of one estimator; ``passed`` when none failed."""

    estimator: str
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v.verdict != "fail" for v in self.verdicts)

    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.verdict == "fail"]

    def table(self) -> str:
        width = max((len(v.check) for v in self.verdicts), default=10)
        lines = [f"{self.estimator}:"]
        lines += [f"  {v.check:<{width}}  {v.verdict:<4}  {v.detail}" for v in self.verdicts]
        n_fail = len(self.failures())
        n_skip = sum(v.verdict == "skip" for v in self.verdicts)
        skipped = f" ({n_skip} skipped: not declared or not applicable)" if n_skip else ""
        lines.append(f"{len(self.verdicts) - n_fail - n_skip} of {len(self.verdicts)} checks hold{skipped}"
                     if n_fail == 0 else f"{n_fail} of {len(self.verdicts)} checks FAIL")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"estimator": self.estimator, "passed": self.passed, "verdicts": [dataclasses.asdict(v) for v in self.verdicts]}


@dataclass
class Context:
    """What the checks share: the estimator, the problem (float64), its exact gradient, a seed and budgets."""

    estimator: Estimator
    seed: int = 0
    max_draws: int = 2_000_000
    chunk: int = 2**14
    problem: Problem = None  # type: ignore[assignment]
    _exact: dict | None = None

    def __post_init__(self) -> None:
        if self.problem is None:
            self.problem = build_problem(PROBLEM).to(dtype=torch.float64)

    def gen(self, *salt: int) -> torch.Generator:
        return torch.Generator(device=self.problem.device).manual_seed(
            int(np.random.SeedSequence([self.seed, *salt]).generate_state(1)[0]))

    @property
    def exact(self) -> dict[str, torch.Tensor]:
        if self._exact is None:
            self._exact = exact(self.problem).grads
        return self._exact

    def moments(self, draws: int, gen: torch.Generator, problem: Problem | None = None) -> dict[str, Moments]:
        """Float64 moments per group of ``draws`` draws, streamed in chunks."""
        p = self.problem if problem is None else problem
        acc = {g: Moments(n) for g, n in zip(p.group_names, p.group_sizes)}
        done = 0
        while done < draws:
            c = min(self.chunk, draws - done)
            out = self.estimator.estimate(p, c, gen)
            for g, v in out.items():
                acc[g].update(v.detach().double().cpu().numpy())
            done += c
        return acc


def _z(alpha: float, m: int) -> float:
    return float(norm.isf(alpha / (2 * max(m, 1))))


def _zmax(diff: np.ndarray, se: np.ndarray, scale: np.ndarray) -> float:
    """Largest ``|diff| / se``; a difference at rounding level (``1e-9`` of the coordinate's scale) is no
    evidence (zero-variance estimators), any other difference with zero standard error is infinite."""
    diff = np.where(diff <= 1e-9 * (np.abs(scale) + 1e-12), 0.0, diff)
    z = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.inf))
    return float(z.max()) if z.size else 0.0


def _coords(ctx: Context) -> int:
    return sum(ctx.problem.group_sizes)


# ---- the checks ------------------------------------------------------------------------------------------------------


def check_output(ctx: Context) -> list[Verdict]:
    """Shapes, floating point and the device are :meth:`Estimator.estimate`'s own contract check (its
    :class:`~estimators.errors.OutputError` fails this check with its message); this adds, in float64 and
    float32, that the values come in the problem's dtype and are finite."""
    bad = []
    for dtype in (torch.float64, torch.float32):
        p = ctx.problem.to(dtype=dtype)
        for g, v in ctx.estimator.estimate(p, 5, ctx.gen(1)).items():
            if v.dtype != dtype:
                bad.append(f"{g}: {v.dtype}, expected {dtype}")
            elif not bool(torch.isfinite(v).all()):
                bad.append(f"{g}: non-finite values in {dtype} (NaN or inf)")
    return [Verdict("output", "fail", "; ".join(bad[:3])) if bad else
            Verdict("output", "ok", "one finite [D, size] tensor per group, in the problem's dtype and device")]


def check_determinism(ctx: Context) -> list[Verdict]:
    a = ctx.estimator.estimate(ctx.problem, 16, ctx.gen(2))
    b = ctx.estimator.estimate(ctx.problem, 16, ctx.gen(2))
    if any(not torch.equal(a[g], b[g]) for g in a):
        return [Verdict("determinism", "fail", "the same generator state gave different draws (a global random "
                                               "stream, or state kept between calls?)")]
    g2 = ctx.gen(2)
    c, d = ctx.estimator.estimate(ctx.problem, 16, g2), ctx.estimator.estimate(ctx.problem, 16, g2)
    zero_var = all(float(v.var(0).max()) == 0.0 for v in c.values())
    if not zero_var and all(torch.equal(c[g], d[g]) for g in c):
        return [Verdict("determinism", "fail", "two calls on one generator gave identical draws (the generator "
                                               "is not advanced)")]
    return [Verdict("determinism", "ok", "reproducible under an explicit generator" +
                    ("; zero variance" if zero_var else ", independent across calls"))]


def check_draws_in_one_call(ctx: Context) -> list[Verdict]:
    n = 4000
    one = ctx.moments(n, ctx.gen(3))
    singles = {g: Moments(m.size) for g, m in one.items()}
    gen = ctx.gen(4)
    single_n = 400
    for _ in range(single_n):
        out = ctx.estimator.estimate(ctx.problem, 1, gen)
        for g, v in out.items():
            singles[g].update(v.detach().double().cpu().numpy())
    z_c = _z(ALPHA / 4, _coords(ctx))
    worst = 0.0
    for g in one:
        se = np.sqrt(one[g].var / one[g].n + singles[g].var / singles[g].n)
        worst = max(worst, _zmax(np.abs(one[g].mean - singles[g].mean), se, one[g].mean))
    if worst > z_c:
        return [Verdict("draws-in-one-call", "fail", f"one call of {n} draws and {single_n} single-draw calls differ: "
                                                     f"max |z| {worst:.2f} > {z_c:.2f}")]
    return [Verdict("draws-in-one-call", "ok", f"max |z| {worst:.2f} <= {z_c:.2f} ({n} draws in one call vs "
                                               f"{single_n} single calls)")]


def _support_problem(encoding: str, noise: str, loss: str) -> Problem:
    return build_problem(f"random:widths=2-2-2,points=3,seed=5,encoding={encoding},noise={noise},loss={loss}")


def check_declared_support(ctx: Context) -> list[Verdict]:
    est, d = ctx.estimator, ctx.estimator.declarations()
    bad = []
    for what, values, declared in (("encoding", ENCODINGS, d["encodings"]), ("noise", tuple(NOISES), d["noises"]),
                                   ("loss", tuple(LOSSES), d["losses"])):
        for value in values:
            base = dict(encoding=d["encodings"][0], noise=d["noises"][0], loss=d["losses"][0])
            base[what] = value
            p = _support_problem(**base)
            try:
                out = est.estimate(p, 3, ctx.gen(5))
                ok = all(bool(torch.isfinite(v).all()) for v in out.values())
                if value not in declared:
                    bad.append(f"{what} {value} is not declared but was accepted")
                elif not ok:
                    bad.append(f"{what} {value}: non-finite output")
            except InputError as exc:
                if value in declared:
                    bad.append(f"{what} {value} is declared but refused: {exc}")
    return [Verdict("declared-support", "fail", "; ".join(bad[:3])) if bad else
            Verdict("declared-support", "ok", "declared encodings, noises and losses work; the others are refused")]


def check_from_path(ctx: Context) -> list[Verdict]:
    est = ctx.estimator
    if not est.has_from_path:
        return [Verdict("from-path", "skip", "not declared (has_from_path is false)")]
    g1, g2 = ctx.gen(6), ctx.gen(6)
    got = est.estimate(ctx.problem, 7, g1)
    path = sample_path(ctx.problem, est.paths_per_draw * 7, g2)
    want = est.from_path(ctx.problem, path, g2)
    if len(want) != len(got) or any(not torch.allclose(w, got[g], rtol=1e-12, atol=1e-12)
                                    for w, g in zip(want, ctx.problem.group_names)):
        return [Verdict("from-path", "fail", "estimate differs from from_path of the path it sampled")]
    return [Verdict("from-path", "ok", "estimate equals from_path of its own sampled path")]


def check_path_determinism(ctx: Context) -> list[Verdict]:
    est = ctx.estimator
    if not est.path_deterministic:
        return [Verdict("path-determinism", "skip", "not declared")]
    if not est.has_from_path:
        return [Verdict("path-determinism", "fail", "declared path-deterministic but has no from_path")]
    path = sample_path(ctx.problem, 11, ctx.gen(7))
    a, b = est.from_path(ctx.problem, path, ctx.gen(8)), est.from_path(ctx.problem, path, ctx.gen(9))
    if any(not torch.equal(x, y) for x, y in zip(a, b)):
        return [Verdict("path-determinism", "fail", "one path, two generators: different estimates")]
    small = ctx.problem.subset(slice(0, 2))
    if 2 ** sum(small.widths[1:]) > MAX_PATHS:  # pragma: no cover - the check's problem is small
        return [Verdict("path-determinism", "skip", "too many paths to enumerate")]
    exact_m = path_moments(est, small)
    n = 20_000
    mc = ctx.moments(n, ctx.gen(10), problem=small)
    z_c = _z(ALPHA / 4, sum(small.group_sizes))
    worst = 0.0
    for g, (mean, var) in exact_m.items():
        se = np.sqrt(var.cpu().numpy() / n)
        worst = max(worst, _zmax(np.abs(mc[g].mean - mean.cpu().numpy()), se, mean.cpu().numpy()))
    if worst > z_c:
        return [Verdict("path-determinism", "fail", f"sampled mean disagrees with the enumerated exact mean: "
                                                    f"max |z| {worst:.2f} > {z_c:.2f}")]
    return [Verdict("path-determinism", "ok", f"a function of the path; sampled mean matches the exact moments "
                                              f"by enumeration (max |z| {worst:.2f})")]


def check_unbiasedness(ctx: Context) -> list[Verdict]:
    """Declared-unbiased groups (:meth:`Estimator.unbiased_groups`): designed z-tests; others: the bias."""
    est, ex = ctx.estimator, ctx.exact
    declared = set(est.unbiased_groups(ctx.problem))
    m = sum(ex[g].numel() for g in declared)
    za, zb = _z(ALPHA / 2, m), float(norm.isf(BETA))
    delta = {g: R * float(v.norm()) / math.sqrt(v.numel()) for g, v in ex.items()}
    out = []
    biased = [g for g in ex if g not in declared]
    if biased:
        mom = ctx.moments(20_000, ctx.gen(12))
        rel = {g: float(np.linalg.norm(mom[g].mean - ex[g].cpu().numpy()) / max(float(ex[g].norm()), 1e-300))
               for g in biased}
        out.append(Verdict("unbiasedness", "skip", "declared biased in " + ", ".join(biased) + "; relative bias " +
                           ", ".join(f"{g} {r:.3g}" for g, r in rel.items())))
    if not declared:
        return out
    pilot = ctx.moments(4096, ctx.gen(11))
    need = max(1.5 * ((za + zb) * float(np.sqrt(pilot[g].var.max())) / delta[g]) ** 2 for g in declared)
    n = max(20_000, int(math.ceil(need / 1024)) * 1024)
    if n > ctx.max_draws:
        return out + [Verdict("unbiasedness", "fail", f"underpowered: the design needs {n} draws, over max_draws "
                                                      f"{ctx.max_draws} (variance too large to certify)")]
    mom = ctx.moments(n, ctx.gen(13))
    for g in (g for g in ex if g in declared):
        v = ex[g]
        se = np.sqrt(mom[g].var / n)
        if float(se.max()) * (za + zb) > delta[g]:
            out.append(Verdict(f"unbiasedness[{g}]", "fail", f"power not reached: SE {float(se.max()):.3g}"))
            continue
        worst = _zmax(np.abs(mom[g].mean - v.cpu().numpy()), se, v.cpu().numpy())
        verdict = "ok" if worst <= za else "fail"
        out.append(Verdict(f"unbiasedness[{g}]", verdict, f"max |z| {worst:.2f} (limit {za:.2f}), N={n}, "
                                                          f"detects a bias of {delta[g]:.3g} per coordinate"))
    return out


def check_finite(ctx: Context) -> list[Verdict]:
    p = build_problem(SATURATED).to(dtype=torch.float64)
    try:
        ctx.estimator.check(p)
    except InputError:
        return [Verdict("finite", "skip", "the saturated network's settings are not supported")]
    out = ctx.estimator.estimate(p, 32, ctx.gen(14))
    bad = [g for g, v in out.items() if not bool(torch.isfinite(v).all())]
    return [Verdict("finite", "fail", f"non-finite estimates in {', '.join(bad)} at |a| ~ 50") if bad else
            Verdict("finite", "ok", "finite on a saturated network")]


def check_cost(ctx: Context) -> list[Verdict]:
    cost = ctx.estimator.cost(ctx.problem)
    vals = [cost.layer_evals, cost.head_evals, cost.backward_passes] if isinstance(cost, Cost) else []
    if not vals or not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in vals):
        return [Verdict("cost", "fail", f"cost() must return a Cost of non-negative finite counts, got {cost!r}")]
    return [Verdict("cost", "ok", f"{cost.layer_evals:g} layer evals, {cost.head_evals:g} head evals, "
                                  f"{cost.backward_passes:g} backward passes per draw")]


CHECKS: dict[str, Callable[[Context], list[Verdict]]] = {
    "output": check_output, "determinism": check_determinism, "draws-in-one-call": check_draws_in_one_call,
    "declared-support": check_declared_support, "from-path": check_from_path,
    "path-determinism": check_path_determinism, "unbiasedness": check_unbiasedness, "finite": check_finite,
    "cost": check_cost,
}


def check_names() -> list[str]:
    return list(CHECKS)


def check_estimator(estimator: Estimator | str, checks: list[str] | None = None, seed: int = 0,
                    max_draws: int = 2_000_000) -> Report:
    """Run the named ``checks`` (default: all) on ``estimator`` (an instance or a spec string).

    >>> report = check_estimator("st", checks=["output", "cost"])
    >>> report.passed
    True
    """
    est = registry.get(estimator) if isinstance(estimator, str) else estimator
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise InputError(f"unknown check {unknown[0]!r}; choose from {', '.join(CHECKS)}")
    ctx = Context(est, seed=seed, max_draws=max_draws)
    report = Report(est.spec)
    for name in names:
        try:
            with np.errstate(all="ignore"):  # an estimate too large for float64 shows as inf in its verdict
                report.verdicts.extend(CHECKS[name](ctx))
        except EstimatorError as exc:  # its code raised, or broke the output contract (Estimator.estimate)
            report.verdicts.append(Verdict(name, "fail", one_line(exc)))
        except InputError as exc:
            report.verdicts.append(Verdict(name, "fail", f"refused the check's problem: {one_line(exc)}"))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a crash outside estimate() (cost(), from_path) fails its check
            report.verdicts.append(Verdict(name, "fail", f"raised {type(exc).__name__}: {one_line(exc)}"))
    return report


def report_json(reports: list[Report]) -> str:
    return json.dumps([r.as_dict() for r in reports], indent=2)
