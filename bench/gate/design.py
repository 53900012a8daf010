r"""The CI regression gate's statistical design and its checks (pure functions, no sampling).

``sbn-bench check`` runs every registered estimator (plus the non-default code paths of
:attr:`Design.paths`) on the small problems of :data:`DESIGN` with fixed seeds
(:mod:`bench.gate.measure`) and judges the result with the functions below against the exact
gradient and a committed baseline (:mod:`bench.gate.baseline`).  ``docs/gate.md#design``.

**One test per coordinate, one per group.**  Every estimator declares which of its parameter
groups are unbiased on a problem (:meth:`estimators.base.Estimator.unbiased_groups`: every group of an
unbiased estimator, PSA's last hidden layer and head, the straight-through family's head).

- A *declared-unbiased* group gets a two-sided $z$-test per coordinate against the exact gradient,
  $z_i=(\bar g_i-g_i)/\mathrm{SE}_i$, $\mathrm{SE}_i=\sqrt{s_i^2/N}$ (check ``unbiased``).
- Any *other* group is compared with the baseline's mean vector: a two-sided $z$-test per
  coordinate of the difference, $z_i=(\bar g_i-\bar g_{0,i})/\sqrt{s_i^2/N+s_{0,i}^2/N_0}$ (check
  ``bias``).  The exact gradient is the same in both runs, so this tests the bias vector
  $b-b_0$ itself: a bias that grows, shrinks or turns fails alike; an unchanged estimator run with
  its own stream again has $\mathbb E z_i=0$.
- Every group gets one one-sided trace-variance check against the baseline (check ``variance``):
  fail if $T>(1+r_v)T_0+z_v\sqrt{\mathrm{SE}_T^2+(1+r_v)^2\mathrm{SE}_{T,0}^2}$, $r_v=10\%$, with the
  SE of the trace from the fourth moment (the spread of $\lVert\hat g_d-c\rVert^2$ over draws, $c$
  the first chunk's mean), so heavy tails widen it honestly.

**Family and false-fail rate.**  The $z$-tests and variance checks of one run form one Bonferroni
family of size $m=\sum P+\sum G$ over the (problem, estimator) tasks ($P$ coordinates and $G$
groups per task, :func:`plan_for`): coordinate tests use $z_c=z_{1-\alpha/(2m)}$, variance checks
$z_v=z_{1-\alpha/m}$, so the family-wise false-fail rate is at most $\alpha=10^{-3}$.  With the fixed
seeds an unchanged tree on the same platform reproduces the baseline exactly and passes; a torch
upgrade that changes the random streams fails with probability $\le\alpha$.

**Power (asserted, not hoped for).**  The smallest change the gate promises to catch is a bias (or
a change of the bias vector) of $\delta=5\%$ of $\lVert g\rVert$, the problem's whole gradient,
spread over its $P$ coordinates: $\delta_i=0.05\lVert g\rVert/\sqrt P$ (any vector of that norm
has a coordinate at least that large).  Each estimator draws, one chunk at a time, until
$\max_i\mathrm{SE}^{\rm test}_i(z_c+z_{1-\beta})\le\delta_i$ times a safety factor 1.1, where the
test's SE is $s_i/\sqrt N$ for coordinates tested against the exact gradient and
$\sqrt{2}\,s_i/\sqrt N$ for those tested against the baseline (whose run has the same spread);
$\beta=10^{-3}$, at least $N_{\min}$ draws.  The stopping rule looks at variances only (mean and
variance estimates are asymptotically independent, so the $z$-tests stay valid).  The ``power``
check then asserts the design with the final SEs (the baseline's own for the difference tests)
and fails deterministically when the cap $N_{\max}$ came first.  The note of each ``power`` line
gives the change detectable within one group alone (information).

A run that raises or returns non-finite values is a failed ``error`` check (a regression, exit 1);
a baseline group whose exact gradient differs from today's (the problem changed) is a failed
``baseline`` check, as is a (problem, estimator) or group missing from the baseline.  A code path
of :attr:`Design.paths` that did not run where it should (the compiled PSA kernel fell back to
eager) is a failed ``path`` check.

The $z$-tests rest on the CLT for $\bar g_i$ at $N\ge32\,768$ draws; a skewed per-draw
distribution shifts the far tail by $O(\gamma z^2/(6\sqrt N))$, small against the margins here.
Exactly reproducible (zero-variance) coordinates get an absolute rounding floor
$10^{-9}\lVert g_{\rm group}\rVert+10^{-12}$ on their SE.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

__all__ = ["Design", "DESIGN", "Plan", "plan_for", "GroupStats", "Measurement", "Check", "check_unbiased",
           "check_bias_shift", "coordinate_se", "detectable_bias", "detectable_group_bias", "check_power", "check_variance",
           "check_path", "evaluate", "failures"]


@dataclass(frozen=True)
class Design:
    """Everything that fixes the gate's numbers; its :meth:`digest` is stored in the baseline."""

    problems: tuple[str, ...] = (
        "random:widths=2-3-3,points=4,seed=7,encoding=pm1",
        "random:widths=2-3-3,points=4,seed=10,encoding=01,loss=softmax,noise=gaussian",
        "random:widths=2-3-3-3,points=4,seed=6,encoding=pm1",
    )
    #: non-default code paths, as (problem spec, estimator spec) tasks run besides the registry's
    #: estimators on :attr:`problems`: the compiled PSA kernels (``auto`` picks eager for the gate's
    #: small layers), fully connected on the two logistic problems and convolutional on a tiny
    #: enumerable conv network
    paths: tuple[tuple[str, str], ...] = (
        ("random:widths=2-3-3,points=4,seed=7,encoding=pm1", "psa:kernel=fused"),
        ("random:widths=2-3-3-3,points=4,seed=6,encoding=pm1", "psa:kernel=fused"),
        ("conv-tiny:seed=3,points=4", "psa:kernel=fused"),
    )
    root_seed: int = 20_200_603
    alpha: float = 1e-3  # family-wise false-fail rate
    beta: float = 1e-3  # miss rate at the promised change
    rel_delta: float = 0.05  # promised detectable bias (change), relative to ||g||
    var_margin: float = 0.10
    chunk: int = 8192  # draws per estimator call (fixes the random stream)
    n_min: int = 32_768  # stochastic estimators: at least this many draws
    n_max: int = 8_388_608
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


def plan_for(tasks: list[list[int]], design: Design = DESIGN) -> Plan:
    """Thresholds for ``tasks``: the group sizes of each (problem, estimator) task (one coordinate test
    per coordinate, one variance check per group)."""
    m = max(sum(sum(sizes) + len(sizes) for sizes in tasks), 1)
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
    mean: np.ndarray
    var: np.ndarray
    exact: np.ndarray | None = None  # absent when read from a baseline

    def summary(self) -> dict:
        debiased = math.sqrt(max(self.bias_norm**2 - self.noise_floor**2, 0.0))
        return dict(size=self.size, n=self.n, grad_norm=self.grad_norm, bias_norm=self.bias_norm,
                    noise_floor=self.noise_floor, bias_norm_debiased=debiased, trace_var=self.trace_var,
                    trace_var_se=self.trace_var_se)

    def record(self) -> dict:
        """The baseline's record: the summary plus the per-coordinate mean and variance."""
        return {**self.summary(), "mean": [float(v) for v in self.mean], "var": [float(v) for v in self.var]}


@dataclass
class Measurement:
    """One (problem, estimator) run: per-group statistics plus how it was made."""

    problem: str
    estimator: str
    unbiased_groups: tuple[str, ...]  # declared by the estimator for this problem
    n: int
    seed: int
    seconds: float
    full_grad_norm: float
    groups: dict[str, GroupStats] = field(default_factory=dict)
    error: str = ""  # the estimator raised or returned non-finite values: a failed check
    path: str = ""  # for Design.paths tasks: why the path did not run ("" when it ran or is not checked)


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


def _worst(meas: Measurement, name: str, check: str, target: np.ndarray, se: np.ndarray, plan: Plan,
           what: str) -> Check:
    gs = meas.groups[name]
    z = (gs.mean - target) / se
    i = int(np.argmax(np.abs(z)))
    bad = np.flatnonzero(np.abs(z) > plan.z_c)
    note = f"coordinate {i}, z = {z[i]:+.2f}, N = {meas.n}, seed = {meas.seed}"
    if bad.size:
        note += "; failing coordinates " + ", ".join(
            f"{j} (mean {gs.mean[j]:.6g}, {what} {target[j]:.6g}, SE {se[j]:.2g}, z {z[j]:+.1f})" for j in bad[:6])
    return Check(meas.problem, meas.estimator, name, check, float(gs.mean[i]), float(target[i]), float(se[i]),
                 plan.z_c, bool(abs(z[i]) <= plan.z_c), note)


def check_unbiased(meas: Measurement, plan: Plan) -> list[Check]:
    """Per declared-unbiased group, the worst coordinate $z$-test against the exact gradient."""
    out = []
    for name, gs in meas.groups.items():
        if name in meas.unbiased_groups:
            se = np.sqrt(gs.var / gs.n + _tiny(gs.grad_norm) ** 2)
            out.append(_worst(meas, name, "unbiased", gs.exact, se, plan, "exact"))
    return out


def check_bias_shift(meas: Measurement, name: str, base: dict, plan: Plan) -> Check:
    """One group's mean vector against the baseline's: the worst coordinate $z$-test of the difference."""
    gs = meas.groups[name]
    se = np.sqrt(gs.var / gs.n + np.asarray(base["var"]) / base["n"] + _tiny(gs.grad_norm) ** 2)
    check = _worst(meas, name, "bias", np.asarray(base["mean"], dtype=float), se, plan, "baseline")
    check.note += f"; bias norm {gs.bias_norm:.4g} (baseline {base['bias_norm']:.4g})"
    return check


def coordinate_se(meas: Measurement, baseline_entry: dict | None = None) -> dict[str, np.ndarray]:
    r"""Per group, the SE of each coordinate's $z$-test: $s_i/\sqrt N$ against the exact gradient
    (declared-unbiased groups), $\sqrt{s_i^2/N+s_{0,i}^2/N_0}$ against the baseline (others; without a
    baseline the next run's own spread is assumed, $\sqrt2\,s_i/\sqrt N$)."""
    out = {}
    for name, gs in meas.groups.items():
        if name in meas.unbiased_groups:
            out[name] = np.sqrt(gs.var / gs.n)
            continue
        base = (baseline_entry or {}).get("groups", {}).get(name)
        if base is None:
            out[name] = np.sqrt(2 * gs.var / gs.n)
        else:
            out[name] = np.sqrt(gs.var / gs.n + np.asarray(base["var"]) / base["n"])
    return out


def detectable_bias(meas: Measurement, plan: Plan, baseline_entry: dict | None = None) -> float:
    r"""Smallest relative bias (change) $\lVert b\rVert/\lVert g\rVert$ the run detects with power $1-\beta$
    (worst-case spread)."""
    se = coordinate_se(meas, baseline_entry)
    P = sum(gs.size for gs in meas.groups.values())
    se_max = max(float(v.max()) for v in se.values())
    if meas.full_grad_norm <= 0:
        return math.inf if se_max > 0 else 0.0
    return se_max * plan.power_factor * math.sqrt(P) / meas.full_grad_norm


def detectable_group_bias(meas: Measurement, plan: Plan, baseline_entry: dict | None = None) -> dict[str, float]:
    r"""Per group, the smallest $\lVert b_g\rVert/\lVert g_g\rVert$ detected with power $1-\beta$ (information only)."""
    out = {}
    for name, se in coordinate_se(meas, baseline_entry).items():
        gs = meas.groups[name]
        out[name] = float(se.max()) * plan.power_factor * math.sqrt(gs.size) / gs.grad_norm if gs.grad_norm > 0 \
            else math.inf
    return out


def check_power(meas: Measurement, plan: Plan, design: Design = DESIGN, baseline_entry: dict | None = None) -> Check:
    """Assert the design: the run detects a relative bias (change) of ``design.rel_delta`` with power $1-\\beta$."""
    d = detectable_bias(meas, plan, baseline_entry)
    per_group = ", ".join(f"{k} {v:.3g}" for k, v in detectable_group_bias(meas, plan, baseline_entry).items())
    return Check(meas.problem, meas.estimator, "all", "power", d, design.rel_delta, math.nan, design.rel_delta,
                 d <= design.rel_delta, f"N = {meas.n}; detectable relative bias at power 1-{design.beta:g}: "
                 f"{d:.3g} of ||g|| (within a group alone: {per_group})")


def check_variance(problem: str, estimator: str, group: str, now: dict, base: dict, plan: Plan,
                   design: Design = DESIGN) -> Check:
    """Single-draw trace variance must not exceed the baseline's beyond $z_v$ SEs and the relative margin."""
    r = design.var_margin
    se = math.hypot(now["trace_var_se"], (1 + r) * base["trace_var_se"])
    limit = (1 + r) * base["trace_var"] + plan.z_v * se + _tiny(now["grad_norm"] ** 2)
    return Check(problem, estimator, group, "variance", now["trace_var"], base["trace_var"], now["trace_var_se"],
                 limit, now["trace_var"] <= limit)


def check_path(meas: Measurement) -> Check:
    """A :attr:`Design.paths` task: its code path ran (deterministic; ``meas.path`` says why not)."""
    return Check(meas.problem, meas.estimator, "all", "path", math.nan, math.nan, math.nan, math.nan,
                 not meas.path, meas.path or "the non-default code path ran")


def evaluate(measurements: list[Measurement], baseline: dict[tuple[str, str], dict] | None, plan: Plan,
             design: Design = DESIGN, paths: set[tuple[str, str]] | None = None) -> list[Check]:
    """All checks of a run; ``baseline`` maps (problem, estimator) to an entry (``None``: skip comparisons);
    ``paths`` are the (problem, estimator) tasks whose code path is checked (default: ``design.paths``)."""
    paths = set(design.paths) if paths is None else paths
    out: list[Check] = []
    for meas in measurements:
        if meas.error:
            out.append(Check(meas.problem, meas.estimator, "all", "error", math.nan, math.nan, math.nan, math.nan,
                             False, meas.error))
            continue
        if (meas.problem, meas.estimator) in paths:
            out.append(check_path(meas))
        out += check_unbiased(meas, plan)
        if baseline is None:
            out.append(check_power(meas, plan, design))
            continue
        entry = baseline.get((meas.problem, meas.estimator))
        if entry is None:
            out.append(Check(meas.problem, meas.estimator, "all", "baseline", math.nan, math.nan, math.nan, math.nan,
                             False, "no baseline entry: run 'sbn-bench check --update-baseline'"))
            continue
        usable = {}
        for name, gs in meas.groups.items():
            base = entry["groups"].get(name)
            if base is None or base["size"] != gs.size:
                out.append(Check(meas.problem, meas.estimator, name, "baseline", math.nan, math.nan, math.nan,
                                 math.nan, False, "group missing from the baseline (or of another size)"))
                continue
            now = gs.summary()
            if not math.isclose(now["grad_norm"], base["grad_norm"], rel_tol=1e-9, abs_tol=1e-12):
                out.append(Check(meas.problem, meas.estimator, name, "baseline", now["grad_norm"], base["grad_norm"],
                                 math.nan, math.nan, False, "the exact gradient differs from the baseline's: the "
                                 "problem changed; review and run 'sbn-bench check --update-baseline'"))
                continue
            usable[name] = base
            if name not in meas.unbiased_groups:
                out.append(check_bias_shift(meas, name, base, plan))
            out.append(check_variance(meas.problem, meas.estimator, name, now, base, plan, design))
        if len(usable) == len(meas.groups):
            out.append(check_power(meas, plan, design, {"groups": usable}))
    return out


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.passed is False]
