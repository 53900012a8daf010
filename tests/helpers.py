"""Helpers shared by several test modules (``from helpers import ...``; ``tests`` is on ``pythonpath``).

Test modules are imported with ``--import-mode=importlib`` and cannot import each other, so code that
more than one of them needs lives here.  Everything is test-only and independent of the library code
it checks (fixtures stay in ``conftest.py``).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy import integrate, special

from estimators.families.arm import Arm
from estimators.model.losses import Loss
from estimators.model import Path, layer_grad
from estimators.families.muprop import mean_field
from reference.exact import all_states
from reference.problems import toy_psa1

# ---- pm1 <-> 0/1 parametrisation -------------------------------------------------------------------------------


def to_01(problem):
    """The 0/1-parametrised problem computing the same network: W01 = 2W, b01 = b - W 1 past the first layer.

    A layer reading pm1 states with (W, b) equals a layer reading 0/1 states with (2W, b - W 1)
    (``docs/model.md#encodings``);
    the first layer reads the real input and is unchanged.
    """
    ws, bs = list(problem.weights), list(problem.biases)
    for k in range(1, len(ws)):
        ws[k], bs[k] = 2 * ws[k], bs[k] - ws[k].sum(1)
    return problem.replace(weights=tuple(ws), biases=tuple(bs), head_weight=2 * problem.head_weight,
                           head_bias=problem.head_bias - problem.head_weight.sum(1), encoding="01")


def pull_back_01(problem, g01):
    """Chain rule: pm1 gradients from 0/1 ones, dL/dW = 2 g01_W - g01_b 1^T, dL/db = g01_b (past the first layer).

    ``g01`` lists the per-group flat gradients of ``to_01(problem)``, with or without leading (draw) dimensions.
    """
    shapes = [w.shape for w in problem.weights] + [problem.head_weight.shape]
    out = [g01[0]]
    for g, (n, m) in zip(g01[1:], shapes[1:]):
        gw, gb = g[..., : n * m].unflatten(-1, (n, m)), g[..., n * m :]
        out.append(torch.cat([(2 * gw - gb.unsqueeze(-1)).flatten(-2), gb], -1))
    return out


# ---- the relaxation toy: x = sign(A - Z), Z logistic, on toy_psa1 -----------------------------------------------


def logistic_pdf(z: float) -> float:
    """The standard logistic density sigma(z) sigma(-z)."""
    return special.expit(z) * special.expit(-z)


def quad_expect(fn, tau: float, spike: float) -> float:
    """E fn(Z) for logistic Z by quadrature, split around the spike of width ~tau at z = ``spike``
    (where the toy's hard state jumps)."""
    cuts = [-np.inf, spike - 60 * tau, spike, spike + 60 * tau, np.inf]
    return sum(integrate.quad(lambda z: fn(z) * logistic_pdf(z), lo, hi, limit=400, epsabs=1e-13, epsrel=1e-12)[0]
               for lo, hi in zip(cuts[:-1], cuts[1:]))


def quad_moments(grad, tau: float, spike: float) -> tuple[float, float, float]:
    """(mean, variance, fourth central moment) of the single-draw estimate ``grad(Z)`` by quadrature."""
    m = quad_expect(grad, tau, spike)
    v = quad_expect(lambda z: (grad(z) - m) ** 2, tau, spike)
    m4 = quad_expect(lambda z: (grad(z) - m) ** 4, tau, spike)
    return m, v, m4


def toy_draws(est, n: int, seed: int, shift: float) -> tuple[float, float]:
    """Mean and variance of n draws of ``est``'s toy_psa1 bias coordinate (float64 sums centred at ``shift``,
    chunks of 2^21 draws)."""
    problem = toy_psa1()
    g = torch.Generator().manual_seed(seed)
    total, total2, done = 0.0, 0.0, 0
    while done < n:
        d = min(2**21, n - done)
        x = est.estimate(problem, d, g)["layer0"][:, 1] - shift
        total, total2, done = total + float(x.sum()), total2 + float((x * x).sum()), done + d
    mean = total / n
    return mean + shift, total2 / n - mean * mean


def toy_z_test(est, tau: float, moments, seed: int, shift: float, z_power: float, delta_mean: float,
               delta_var: float) -> tuple[float, float, str]:
    """The designed Monte Carlo test of ``est`` on the toy against the quadrature ``moments`` (m, v, m4).

    N is the number of draws needed for the designed power, for the mean (a shift of ``delta_mean``) and
    for the variance (a relative change of ``delta_var``; kurtosis from quadrature); the design is asserted.
    Returns the z-scores of the sample mean and variance and a line describing the run.
    """
    m, v, m4 = moments
    n = math.ceil(max((z_power * math.sqrt(v) / delta_mean) ** 2,
                      (z_power * math.sqrt(m4 - v * v) / (delta_var * v)) ** 2))
    se_mean, se_var = math.sqrt(v / n), math.sqrt((m4 - v * v) / n)
    assert se_mean * z_power <= delta_mean and se_var * z_power <= delta_var * v  # the design
    mean, var = toy_draws(est, n, seed, shift)
    z_mean, z_var = (mean - m) / se_mean, (var - v) / se_var
    info = f"tau={tau} N={n} mean={mean:.5f} quad={m:.5f} var={var:.5f} quad={v:.5f} z=({z_mean:.2f}, {z_var:.2f})"
    return z_mean, z_var, info


def noise_of_uniform(noise: str, u: torch.Tensor) -> torch.Tensor:
    """The noise z = F^-1(u) of the named law (logistic, gaussian or uniform) written out directly, with u
    clamped to [1e-15, 1 - 1e-15]: an independent reference for the relaxations' quantile."""
    u = u.clamp(1e-15, 1 - 1e-15)
    return {"logistic": torch.log(u / (1 - u)), "gaussian": math.sqrt(2) * torch.erfinv(2 * u - 1),
            "uniform": 2 * u - 1}[noise]


# ---- exact enumeration of one-point problems ---------------------------------------------------------------------


def enumerate_paths(problem):
    """Every joint path of a one-point problem as a Path (one draw per path) and its probability.

    The uniforms are NaN, so an estimator that (wrongly) reads them yields NaN.
    """
    assert problem.batch_size == 1
    widths = list(problem.widths[1:])
    joint = all_states(sum(widths), problem.dtype)
    P, law = joint.shape[0], problem.noise_law
    path = Path([], [], [], [])
    inp = problem.X.expand(P, 1, problem.widths[0])
    logp = torch.zeros(P, dtype=problem.dtype)
    for k, x in enumerate(torch.split(joint, widths, dim=1)):
        x = x.unsqueeze(1)
        a = problem.preact(k, inp)
        path.x.append(x), path.a.append(a), path.inputs.append(inp)
        path.u.append(torch.full_like(a, math.nan))
        logp = logp + law.log_cdf(x * a).sum((1, 2))
        inp = problem.enc(x)
    return path, logp.exp()


def exact_moments(fn, problem, check_total: bool = False):
    """Exact mean and single-draw variance per group of a path-deterministic ``fn(problem, path)``.

    The batch estimate averages independent per-point estimates: mean = average of the per-point
    means, variance = sum of per-point variances / B^2 (``docs/exact.md#exact-moments``).  With
    ``check_total``, also asserts
    that each point's path probabilities sum to one.
    """
    B = problem.batch_size
    mean, var = None, None
    for b in range(B):
        pb = problem.subset(slice(b, b + 1))
        path, prob = enumerate_paths(pb)
        if check_total:
            assert float(prob.sum()) == pytest.approx(1.0, abs=1e-12)
        grads = fn(pb, path)
        mb = [(prob[:, None] * g).sum(0) for g in grads]
        vb = [(prob[:, None] * (g - m) ** 2).sum(0) for g, m in zip(grads, mb)]
        mean = mb if mean is None else [x + y for x, y in zip(mean, mb)]
        var = vb if var is None else [x + y for x, y in zip(var, vb)]
    names = problem.group_names
    return {n: m / B for n, m in zip(names, mean)}, {n: v / B**2 for n, v in zip(names, var)}


# ---- exact integration over the cells of u (one layer, one point) ------------------------------------------------

_GL = 1 / math.sqrt(3.0)  # 2-point Gauss-Legendre nodes on [-1, 1] (weights 1): exact for cubics


def cell_grid(problem):
    """Exact quadrature over $u\\in[0,1]^n$ for a one-layer, one-point problem.

    Per unit the integrand is polynomial in $u$ (degree <= 1; <= 2 once squared) on the cells cut at
    $F(\\pm a)$; two Gauss-Legendre nodes per cell and a tensor product over units integrate means
    and second moments exactly.  Returns a Path with one draw per node, the node weights and, per node,
    the midpoint of the cell each $u_i$ lies in.
    """
    assert problem.depth == 1 and problem.batch_size == 1
    law = problem.noise_law
    a = problem.preact(0, problem.X)[0]  # [n]
    nodes, weights, mids = [], [], []
    for ai in a:
        lo, hi = sorted([float(law.cdf(-ai)), float(law.cdf(ai))])
        u_i, w_i, m_i = [], [], []
        for l, r in ((0.0, lo), (lo, hi), (hi, 1.0)):
            c, h = (l + r) / 2, (r - l) / 2
            u_i += [c - h * _GL, c + h * _GL]
            w_i += [h, h]
            m_i += [c, c]
        nodes.append(torch.tensor(u_i, dtype=torch.float64))
        weights.append(torch.tensor(w_i, dtype=torch.float64))
        mids.append(torch.tensor(m_i, dtype=torch.float64))
    n = a.numel()
    u = torch.cartesian_prod(*nodes).reshape(-1, 1, n)
    w = torch.cartesian_prod(*weights).reshape(-1, n).prod(1)
    mid = torch.cartesian_prod(*mids).reshape(-1, 1, n)
    aa = a.expand_as(u)
    x = torch.where(u < law.cdf(aa), 1.0, -1.0).to(u.dtype)
    inp = problem.X.expand(u.shape[0], 1, problem.widths[0])
    return Path([x], [aa], [u], [inp]), w, mid


# ---- seeded sampling statistics ------------------------------------------------------------------------------------


@dataclass
class Moments:
    """Per-coordinate running mean and sum of squared deviations ($M_2$) of ``n`` draws, per group."""

    n: int
    mean: dict[str, torch.Tensor]
    m2: dict[str, torch.Tensor]

    def se(self, name: str) -> torch.Tensor:
        """Standard error of the mean of group ``name``."""
        return (self.m2[name] / (self.n - 1) / self.n).sqrt()

    def sd(self, name: str) -> torch.Tensor:
        """Sample standard deviation of one draw of group ``name``."""
        return (self.m2[name] / (self.n - 1)).sqrt()


def draw_moments(estimator, problem, draws: int, seed: int, chunk: int) -> Moments:
    """Per-coordinate mean and $M_2$ of ``draws`` draws, in float64 chunks of ``chunk`` merged with Chan's formula."""
    gen = torch.Generator().manual_seed(seed)
    acc: Moments | None = None
    done = 0
    while done < draws:
        c = min(chunk, draws - done)
        out = estimator.estimate(problem, c, gen)
        mean = {k: v.double().mean(0) for k, v in out.items()}
        m2 = {k: ((v.double() - mean[k]) ** 2).sum(0) for k, v in out.items()}
        if acc is None:
            acc = Moments(c, mean, m2)
        else:
            n = acc.n + c
            for k in out:
                d = mean[k] - acc.mean[k]
                acc.mean[k] = acc.mean[k] + d * c / n
                acc.m2[k] = acc.m2[k] + m2[k] + d * d * acc.n * c / n
            acc.n = n
        done += c
    return acc


# ---- deliberately wrong or test-only pieces --------------------------------------------------------------------------


def drop_analytic_term(problem, path, grads):
    """MuProp's gradients ``grads`` with its analytic term J * 2F'(a) subtracted again (recomputed the same way
    as in MuProp): the control variate's mean is never added back, so the result is biased."""
    law = problem.noise_law
    for k in range(problem.depth):
        _, _, jk = mean_field(problem, k + 1, 2 * law.cdf(path.a[k]) - 1)
        grads[k] = grads[k] - layer_grad(jk[0] * 2 * law.pdf(path.a[k]), path.inputs[k])
    return grads


@dataclass(frozen=True)
class FlippedArm(Arm):
    """ARM with the sign of the hidden-layer term flipped (a regression the unbiasedness tests must catch)."""

    def from_path(self, problem, path, generator):
        """ARM's gradients with every hidden layer's negated (the head's kept)."""
        grads = super().from_path(problem, path, generator)
        return [-g for g in grads[:-1]] + grads[-1:]


class LinearLoss(Loss):
    """f = <eta, y>: linear in the last layer's states (test-only)."""

    name = "linear"

    def value(self, eta, y):
        """The loss <eta, y> per point."""
        return (eta * y).sum(-1)

    def grad(self, eta, y):
        """Its gradient in eta: y."""
        return y.expand_as(eta)

    def check_labels(self, y, n_out):
        """Labels are a [B, n_out] matrix."""
        assert y.dim() == 2 and y.shape[1] == n_out


def designed_z_test(estimator, problem, exact_grads: dict, *, r: float, cap: int, za: float, zb: float, m: int,
                    label: str, key: str, pilot: int, min_n: int, chunk: int) -> tuple[float, list[str]]:
    """The designed per-coordinate z-test of an unbiased estimator against ``exact_grads``.

    $\\delta=r\\lVert g\\rVert/\\sqrt{\\text{size}}$ per group; $N$ from a pilot run (seed + 1) as
    $1.5((z_a+z_b)s_{\\max}/\\delta)^2$, at least ``min_n``, at most ``cap`` (asserted); the power
    $\\mathrm{SE}(z_a+z_b)\\le\\delta$ is asserted on the final sample.  Returns the largest $|z|$ and
    one line per coordinate over ``za``.  Seeds come from ``label`` and ``key``.
    """
    dl = {k: r * float(g.norm()) / math.sqrt(g.numel()) for k, g in exact_grads.items()}
    seed = zlib.crc32(f"{label}|{key}".encode())
    pilot_mom = draw_moments(estimator, problem, pilot, seed + 1, chunk)
    need = max(1.5 * ((za + zb) * float(pilot_mom.sd(k).max()) / d) ** 2 for k, d in dl.items())
    N = max(min_n, int(math.ceil(need / 1024)) * 1024)
    assert N <= cap, f"{label} on {key}: the design needs N={N} draws, over the cap {cap} (variance regression?)"
    mom = draw_moments(estimator, problem, N, seed, chunk)
    worst, bad = 0.0, []
    for name, g in exact_grads.items():
        se = mom.se(name)
        assert float(se.max()) * (za + zb) <= dl[name], (
            f"power design fails for {label} on {key}, group {name}: SE {float(se.max()):.3g} * {za + zb:.3f} > "
            f"delta {dl[name]:.3g} (N={N}, seed={seed})")
        z = (mom.mean[name] - g) / se.clamp_min(1e-300)
        # a coordinate with no variance (exactly 0 since constant rows are kept exact): 0 when its mean is
        # the exact value up to rounding, else an infinite z
        z = torch.where(se > 0, z, torch.where((mom.mean[name] - g).abs() < 1e-12, 0.0, math.inf))
        worst = max(worst, float(z.abs().max()))
        for i in torch.nonzero(z.abs() > za).flatten().tolist():
            bad.append(f"{label} on {key}: {name}[{i}] mean {float(mom.mean[name][i]):.6g} exact {float(g[i]):.6g} "
                       f"SE {float(se[i]):.3g} z {float(z[i]):.2f} (threshold {za:.2f}, m={m}) N={N} seed={seed}")
    return worst, bad
