r"""The CI regression gate's statistical design and its checks (pure functions, no sampling).

``sbn-bench check`` runs every registered estimator on the small problems of :data:`DESIGN` with
fixed seeds (:mod:`bench.gate.measure`) and judges the result with the functions below against the
exact gradient and a committed baseline (:mod:`bench.gate.baseline`).

**Family and false-fail rate.**  Every random event that can fail an unchanged tree is counted in
one Bonferroni family of size $m=m_1+m_2+m_3$ (:func:`plan_for`), so the family-wise false-fail
rate is at most $\alpha=10^{-3}$:

- $m_1$: one two-sided coordinate $z$-test per coordinate of every unbiased estimator on every
  problem, $z_i=(\bar g_i-g_i)/\mathrm{SE}_i$, $\mathrm{SE}_i=\sqrt{s_i^2/N}$; fail if
  $\max_i|z_i|>z_c=z_{1-\alpha/(2m)}$.
- $m_2$: the bias-norm checks (every estimator, every group) use two boxes, now and baseline, each
  of $P_g$ coordinates: with probability $\ge1-2P_g\alpha/(2m)$ every $|\bar g_i-\mathbb E\hat g_i|\le
  z_c\mathrm{SE}_i$, hence $\big|\lVert\bar g-g\rVert-\lVert b\rVert\big|\le z_c\,\nu$ with the
  noise floor $\nu=\sqrt{\sum_is_i^2/N}$.  A group fails if
  $\lVert\bar g-g\rVert-z_c\nu>(1+r_b)\,(\lVert\bar g_0-g\rVert+z_c\nu_0)$ (0 = baseline), which under
  "no regression" ($\lVert b\rVert\le(1+r_b)\lVert b_0\rVert$) needs one of the boxes to be violated.
  $m_2=2\sum P_g$.  Relative margin $r_b=10\%$.
- $m_3$: the trace-variance checks (every estimator, every group), one-sided:
  fail if $\operatorname{tr}\widehat{\mathrm{Var}}>(1+r_v)\operatorname{tr}\widehat{\mathrm{Var}}_0
  +z_v\sqrt{\mathrm{SE}^2+(1+r_v)^2\mathrm{SE}_0^2}$ with $z_v=z_{1-\alpha/m}$, $r_v=10\%$ and the
  SE of the trace from the fourth moment (the spread of $\lVert\hat g_d-c\rVert^2$ over draws,
  $c$ the first chunk's mean), so heavy tails (REINFORCE) widen it honestly.  $m_3=\sum1$.

With the fixed seed an unchanged tree on the same platform reproduces the baseline exactly and
passes; a torch upgrade that changes the random streams fails with probability $\le\alpha$.

**Power (asserted, not hoped for).**  The smallest bias the gate promises to catch is
$\delta=5\%$ of $\lVert g\rVert$ (the problem's whole gradient) spread over its $P$ coordinates,
$\delta_i=0.05\lVert g\rVert/\sqrt P$: any bias vector of norm $\ge\delta$ has a coordinate with
$|b_i|\ge\delta_i$.  Each unbiased estimator draws until
$\max_i\mathrm{SE}_i\,(z_c+z_{1-\beta})\le\delta_i$ (variance-only stopping rule, times a safety
factor 1.1; mean and variance estimates are asymptotically independent, so the $z$-test stays
valid), with $\beta=10^{-3}$; the ``power`` check then asserts the design with the final SE and
fails deterministically when the cap $N_{\max}$ was reached first.  With the 17 estimators
registered when the baseline was made, on the three problems, $m=3963$: $z_c=5.16$, $z_v=5.03$, $z_{1-\beta}=3.09$, i.e.
$N\approx1.1\,(8.25\,s_{\max}\sqrt P/(0.05\lVert g\rVert))^2$ (57k to 1.1M draws).  The
note of each ``power`` line also gives the bias detectable within one group alone,
$\max_i\mathrm{SE}_i(z_c+z_{1-\beta})\sqrt{P_g}/\lVert g_g\rVert$ (information, not asserted).
Biased estimators draw $N_b=262\,144$.  Outside the boxes (probability $\le\alpha$) a bias-norm
regression is caught for sure once $\lVert b\rVert>(1+r_b)(\lVert b_0\rVert+2z_c\nu_0)+2z_c\nu$,
i.e. above the 10% margin plus about $4z_c\approx21$ noise floors ($\nu\approx\sqrt{\operatorname{tr}
\mathrm{Var}/N}$, printed as the SE of ``bias`` lines).  Deterministic estimators stop after one chunk.

A run that raises or returns non-finite values is a failed ``error`` check (a regression, exit 1),
and a baseline group whose exact-gradient norm differs from today's (the problem changed) is a
failed ``baseline`` check, as is a (problem, estimator) missing from the baseline.

The $z$-tests rest on the CLT for $\bar g_i$ at $N\ge32\,768$ draws; a skewed per-draw
distribution shifts the far tail by $O(\gamma z^2/(6\sqrt N))$, small against the margins here.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

__all__ = ["Design", "DESIGN", "Plan", "plan_for", "GroupStats", "Measurement", "Check", "check_unbiased",
           "detectable_bias", "detectable_group_bias", "check_power", "check_bias", "check_variance", "evaluate", "failures"]


@dataclass(frozen=True)
class Design:
    """Everything that fixes the gate's numbers; its :meth:`digest` is stored in the baseline."""

    problems: tuple[str, ...] = (
        "random:widths=2-3-3,points=4,seed=7,encoding=pm1",
        "random:widths=2-3-3,points=4,seed=10,encoding=01,loss=softmax,noise=gaussian",
        "random:widths=2-3-3-3,points=4,seed=6,encoding=pm1",
    )
    root_seed: int = 20_200_603
    alpha: float = 1e-3  # family-wise false-fail rate
    beta: float = 1e-3  # miss rate at the promised bias
    rel_delta: float = 0.05  # promised detectable bias, relative to ||g||
    bias_margin: float = 0.10
    var_margin: float = 0.10
    chunk: int = 8192  # draws per estimator call (fixes the random stream)
    n_min: int = 32_768  # unbiased estimators: at least this many draws
    n_biased: int = 262_144
    n_max: int = 2_097_152
    safety: float = 1.1

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


DESIGN = Design()


@dataclass(frozen=True)
class Plan:
    """The family size and thresholds of one gate run (see the module docstring)."""

    m: int
    z_c: float  # two-sided, per coordinate
    z_v: float  # one-sided, per variance check
    z_beta: float

    @property
    def power_factor(self) -> float:
        return self.z_c + self.z_beta


def plan_for(tasks: list[tuple[list[int], bool]], design: Design = DESIGN) -> Plan:
    """Thresholds for ``tasks``: one ``(group sizes, unbiased)`` pair per (problem, estimator)."""
    m1 = sum(sum(sizes) for sizes, unbiased in tasks if unbiased)
    m2 = sum(2 * sum(sizes) for sizes, _ in tasks)
    m3 = sum(len(sizes) for sizes, _ in tasks)
    m = max(m1 + m2 + m3, 1)
    nd = NormalDist()
    return Plan(m=m, z_c=nd.inv_cdf(1 - design.alpha / (2 * m)), z_v=nd.inv_cdf(1 - design.alpha / m),
                z_beta=nd.inv_cdf(1 - design.beta))


@dataclass
class GroupStats:
    """Streamed float64 statistics of one parameter group over ``n`` draws."""

    size: int
    n: int
    grad_norm: float  # ||g|| of the exact group gradient
    bias_norm: float  # ||mean - g||
    noise_floor: float  # sqrt(sum var / n)
    trace_var: float
    trace_var_se: float
    mean: np.ndarray | None = None  # per coordinate (absent when read from a baseline)
    var: np.ndarray | None = None
    exact: np.ndarray | None = None

    def summary(self) -> dict:
        debiased = math.sqrt(max(self.bias_norm**2 - self.noise_floor**2, 0.0))
        return dict(size=self.size, n=self.n, grad_norm=self.grad_norm, bias_norm=self.bias_norm,
                    noise_floor=self.noise_floor, bias_norm_debiased=debiased, trace_var=self.trace_var,
                    trace_var_se=self.trace_var_se)


@dataclass
class Measurement:
    """One (problem, estimator) run: per-group statistics plus how it was made."""

    problem: str
    estimator: str
    unbiased: bool
    n: int
    seed: int
    seconds: float
    full_grad_norm: float
    groups: dict[str, GroupStats] = field(default_factory=dict)
    error: str = ""  # the estimator raised or returned non-finite values: a failed check


@dataclass
class Check:
    """One line of the gate's table; ``passed`` is ``None`` for information-only lines."""

    problem: str
    estimator: str
    group: str
    check: str
    estimate: float
    reference: float
    se: float
    limit: float
    passed: bool | None
    note: str = ""


def _tiny(scale: float) -> float:
    """Absolute tolerance for exactly reproducible (zero-variance) quantities."""
    return 1e-9 * scale + 1e-12


def check_unbiased(meas: Measurement, plan: Plan) -> list[Check]:
    """Per group, the worst coordinate $z$-test of an unbiased estimator against the exact gradient."""
    out = []
    for name, gs in meas.groups.items():
        se = np.sqrt(gs.var / gs.n + _tiny(gs.grad_norm) ** 2)  # a rounding floor for zero-variance coordinates
        diff = gs.mean - gs.exact
        z = diff / se
        i = int(np.argmax(np.abs(z)))
        bad = np.flatnonzero(np.abs(z) > plan.z_c)
        note = f"coordinate {i}, z = {z[i]:+.2f}, N = {meas.n}, seed = {meas.seed}"
        if bad.size:
            note += "; failing coordinates " + ", ".join(
                f"{j} (mean {gs.mean[j]:.6g}, exact {gs.exact[j]:.6g}, SE {se[j]:.2g}, z {z[j]:+.1f})" for j in bad[:6])
        out.append(Check(meas.problem, meas.estimator, name, "unbiased", float(gs.mean[i]), float(gs.exact[i]),
                         float(se[i]), plan.z_c, bool(abs(z[i]) <= plan.z_c), note))
    return out


def detectable_bias(meas: Measurement, plan: Plan) -> float:
    r"""Smallest relative bias $\lVert b\rVert/\lVert g\rVert$ the run detects with power $1-\beta$ (worst-case spread)."""
    P = sum(gs.size for gs in meas.groups.values())
    se_max = max(float(np.sqrt(gs.var.max() / gs.n)) for gs in meas.groups.values())
    if meas.full_grad_norm <= 0:
        return math.inf if se_max > 0 else 0.0
    return se_max * plan.power_factor * math.sqrt(P) / meas.full_grad_norm


def detectable_group_bias(meas: Measurement, plan: Plan) -> dict[str, float]:
    r"""Per group, the smallest $\lVert b_g\rVert/\lVert g_g\rVert$ detected with power $1-\beta$ (information only)."""
    out = {}
    for name, gs in meas.groups.items():
        se = float(np.sqrt(gs.var.max() / gs.n))
        out[name] = se * plan.power_factor * math.sqrt(gs.size) / gs.grad_norm if gs.grad_norm > 0 else math.inf
    return out


def check_power(meas: Measurement, plan: Plan, design: Design = DESIGN) -> Check:
    """Assert the design: the run detects a relative bias of ``design.rel_delta`` with power $1-\\beta$."""
    d = detectable_bias(meas, plan)
    per_group = ", ".join(f"{k} {v:.3g}" for k, v in detectable_group_bias(meas, plan).items())
    return Check(meas.problem, meas.estimator, "all", "power", d, design.rel_delta, math.nan, design.rel_delta,
                 d <= design.rel_delta, f"N = {meas.n}; detectable relative bias at power 1-{design.beta:g}: "
                 f"{d:.3g} of ||g|| (within a group alone: {per_group})")


def check_bias(problem: str, estimator: str, group: str, now: dict, base: dict, plan: Plan,
               design: Design = DESIGN) -> Check:
    """Bias norm must not exceed the baseline's beyond the noise boxes and the relative margin."""
    z, r = plan.z_c, design.bias_margin
    limit = z * now["noise_floor"] + (1 + r) * (base["bias_norm"] + z * base["noise_floor"])
    limit += _tiny(now["grad_norm"])
    return Check(problem, estimator, group, "bias", now["bias_norm"], base["bias_norm"], now["noise_floor"], limit,
                 now["bias_norm"] <= limit)


def check_variance(problem: str, estimator: str, group: str, now: dict, base: dict, plan: Plan,
                   design: Design = DESIGN) -> Check:
    """Single-draw trace variance must not exceed the baseline's beyond $z_v$ SEs and the relative margin."""
    r = design.var_margin
    se = math.hypot(now["trace_var_se"], (1 + r) * base["trace_var_se"])
    limit = (1 + r) * base["trace_var"] + plan.z_v * se + _tiny(now["grad_norm"] ** 2)
    return Check(problem, estimator, group, "variance", now["trace_var"], base["trace_var"], now["trace_var_se"],
                 limit, now["trace_var"] <= limit)


def evaluate(measurements: list[Measurement], baseline: dict[tuple[str, str], dict] | None, plan: Plan,
             design: Design = DESIGN) -> list[Check]:
    """All checks of a run; ``baseline`` maps (problem, estimator) to an entry (``None``: skip comparisons)."""
    out: list[Check] = []
    for meas in measurements:
        if meas.error:
            out.append(Check(meas.problem, meas.estimator, "all", "error", math.nan, math.nan, math.nan, math.nan,
                             False, meas.error))
            continue
        if meas.unbiased:
            out += check_unbiased(meas, plan)
            out.append(check_power(meas, plan, design))
        if baseline is None:
            continue
        entry = baseline.get((meas.problem, meas.estimator))
        if entry is None:
            out.append(Check(meas.problem, meas.estimator, "all", "baseline", math.nan, math.nan, math.nan, math.nan,
                             False, "no baseline entry: run 'sbn-bench check --update-baseline'"))
            continue
        for name, gs in meas.groups.items():
            base = entry["groups"].get(name)
            if base is None:
                out.append(Check(meas.problem, meas.estimator, name, "baseline", math.nan, math.nan, math.nan,
                                 math.nan, False, "group missing from the baseline"))
                continue
            now = gs.summary()
            if not math.isclose(now["grad_norm"], base["grad_norm"], rel_tol=1e-9, abs_tol=1e-12):
                out.append(Check(meas.problem, meas.estimator, name, "baseline", now["grad_norm"], base["grad_norm"],
                                 math.nan, math.nan, False, "the exact gradient differs from the baseline's: the "
                                 "problem changed; review and run 'sbn-bench check --update-baseline'"))
                continue
            out.append(check_bias(meas.problem, meas.estimator, name, now, base, plan, design))
            out.append(check_variance(meas.problem, meas.estimator, name, now, base, plan, design))
    return out


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.passed is False]
