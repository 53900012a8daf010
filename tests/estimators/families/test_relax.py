r"""RELAX per layer with a learned surrogate (``docs/estimators/score-function.md#relax``), logistic noise.

1. **Exact unbiasedness on the one-unit toys** (``toy-psa1``, ``toy-relax1``), deterministic: for a
   fixed state $\phi$ the single-draw estimate is a function of two uniforms $(u,v)$; its mean is
   integrated by Gauss-Legendre quadrature in the noise variables $w=\operatorname{logit}u$ (split at
   the jump $w=a$) and $\rho=\operatorname{logit}(1-v)$, where the integrand times the logistic density
   is analytic and decays like $e^{-|w|}$ (the ranges are cut at $\pm40$).  The quadrature error
   (checked by refinement) is below $10^{-12}$; the mean must equal the exact gradient to
   $10^{-10}$, for a random $\phi$, the initial one and an adapted one.  Teeth: two plausible
   transcription errors move the mean by more than $10^{-3}$.
2. **Seeded statistical unbiasedness** on small deep networks against :func:`reference.exact.exact`,
   the design of ``tests/estimators/test_unbiased.py``: per coordinate $z=(\bar g-g)/\mathrm{SE}$,
   fail if $|z|>z_{1-\alpha/(2m)}$; power $\delta_{\rm group}=r\lVert g_{\rm group}\rVert/\sqrt{\rm size}$,
   $N=1.5((z_{1-\alpha/(2m)}+z_{1-\beta})s_{\max}/\delta)^2$ from an independent pilot, and the test
   **asserts** $\mathrm{SE}\,(z_{1-\alpha/(2m)}+z_{1-\beta})\le\delta$ ($\beta=10^{-3}$).  Default tier:
   one 2-layer network at $r=0.2$, and a biased variant (no $\partial\tilde z/\partial a$) that must be
   rejected; slow tier: three more networks (0/1 encoding, depth 3, softmax) at $r=0.1$/$0.2$.
3. **Adaptation lowers the variance**: exactly (quadrature) on the toy, and on a 2-layer network by
   a paired (common random numbers) Monte Carlo ratio of trace variances with a one-sided bound.
4. Determinism under the explicit generator, the state API (init/adapt/estimate_with, split
   adaptation, save/load), the number of steps a call takes, REBAR at the initial state, both
   encodings, a convolutional network adapting like its dense twin, declarations.

**Statistical budget.**  This module's family-wise false-fail rate is $\alpha=10^{-4}$, split by
Bonferroni over $m$ = every coordinate of the $z$-tests (slow ones included) plus the two one-sided
variance checks.  (The quadrature tests are deterministic and spend nothing.)
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
import pytest
import torch
from scipy.stats import norm

from estimators import registry
from estimators.errors import InputError
from estimators.families.rebar import Rebar
from estimators.families.relax import (PARAM_NAMES, Relax, RelaxState, conditional_logit, draw_conditional_uniforms,
                                       relax_grads, surrogate)
from estimators.model import Path, head_grad, sample_path
from helpers import designed_z_test, pull_back_01, to_01
from reference.exact import exact
from reference.problems import build_problem, random_problem

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors, many small ops (the adaptation)


# ---- 1. exact unbiasedness on the one-unit toys (quadrature) ----------------------------------------------------

def _legendre(lo: float, hi: float, n: int, panels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite Gauss-Legendre: ``n`` nodes on each of ``panels`` equal panels of [lo, hi]."""
    x, w = np.polynomial.legendre.leggauss(n)
    edges = np.linspace(lo, hi, panels + 1)
    h = np.diff(edges)[:, None] / 2
    return torch.tensor((edges[:-1, None] + h * (x + 1)).ravel()), torch.tensor((h * w).ravel())


def _logistic_density(w: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(w) * torch.sigmoid(-w)


def toy_grid(problem, n: int, cut: float = 40.0):
    """Quadrature nodes over (u, v) of a one-unit, one-point problem: a Path with one draw per node, the
    uniforms v, and the node weights (summing to 1 up to the cut tails)."""
    assert problem.depth == 1 and problem.batch_size == 1 and problem.widths[1] == 1
    a = float(problem.preact(0, problem.X)[0, 0])
    w_hi, p_hi = _legendre(a - cut, a, n, 4)  # w < a: u < F(a), x = +1
    w_lo, p_lo = _legendre(a, a + cut, n, 4)  # x = -1
    w = torch.cat([w_hi, w_lo])
    pw = torch.cat([p_hi, p_lo]) * _logistic_density(w)
    x = torch.cat([torch.ones(w_hi.numel()), -torch.ones(w_lo.numel())]).double()
    rho, pr = _legendre(-cut, cut, n, 8)  # rho = logit(1 - v)
    pr = pr * _logistic_density(rho)
    W, R = torch.meshgrid(torch.arange(w.numel()), torch.arange(rho.numel()), indexing="ij")
    W, R = W.reshape(-1), R.reshape(-1)
    D = W.numel()
    shape = (D, 1, 1)
    path = Path(x=[x[W].reshape(shape)], a=[torch.full(shape, a, dtype=torch.float64)],
                u=[torch.sigmoid(w[W]).reshape(shape)], inputs=[problem.X.expand(D, 1, problem.widths[0])])
    vs = [torch.sigmoid(-rho[R]).reshape(shape)]
    return path, vs, (pw[W] * pr[R])


def quad_mean_var(problem, grads_fn, n: int = 40):
    """Exact (quadrature) mean and variance per group of the single-draw estimate ``grads_fn(path, vs)``."""
    path, vs, weight = toy_grid(problem, n)
    assert float(weight.sum()) == pytest.approx(1.0, abs=1e-13)
    grads = grads_fn(path, vs)
    mean = [(weight[:, None] * g).sum(0) for g in grads]
    var = [(weight[:, None] * (g - m) ** 2).sum(0) for g, m in zip(grads, mean)]
    return dict(zip(problem.group_names, mean)), dict(zip(problem.group_names, var))


def random_state(problem, seed: int, hidden: int = 5) -> RelaxState:
    """A state with every parameter random (not the REBAR start): RELAX must be unbiased for any phi."""
    g = torch.Generator().manual_seed(seed)
    phi = []
    for n in problem.widths[1:]:
        r = lambda *s: torch.randn(s, generator=g, dtype=torch.float64)  # noqa: E731
        phi.append((r(hidden, n), r(hidden), r(hidden), r(), 0.5 + r().abs(), r() * 0.5))
    zeros = tuple(tuple(torch.zeros_like(p) for p in layer) for layer in phi)
    return RelaxState(tuple(phi), zeros, zeros, 0)


TOYS = ["toy-psa1", "toy-relax1"]


def _states(problem):
    est = Relax(hidden=5)
    init = est.init_state(problem, torch.Generator().manual_seed(1))
    adapted = est.adapt(problem, init, 30, torch.Generator().manual_seed(2))
    return {"random": random_state(problem, 3), "init": init, "adapted": adapted}


@pytest.mark.parametrize("toy", TOYS)
def test_exact_mean_on_toy_for_any_state(toy):
    p = build_problem(toy)
    ex = exact(p).grads
    for label, state in _states(p).items():
        mean, _ = quad_mean_var(p, lambda path, vs: relax_grads(p, state.phi, path, vs))
        finer, _ = quad_mean_var(p, lambda path, vs: relax_grads(p, state.phi, path, vs), n=56)
        for k in p.group_names:
            assert float((mean[k] - finer[k]).abs().max()) < 1e-12, (toy, label, k)  # quadrature converged
            torch.testing.assert_close(mean[k], ex[k], rtol=0, atol=1e-10, msg=f"{toy} {label} {k}")


def _wrong_grads(problem, phi, path, vs, variant):
    """RELAX with a transcription error: 'constant z~' drops the factor dz~/da (z~ treated as independent of
    theta); 'no conditional' drops the whole -dc(z~) dz~/da term.  (Using c(z) for c(z~) in the score term
    would not be an error: z and z~ have the same joint law with b, so only the variance changes.)"""
    a, x = path.a[0], path.x[0]
    Z = [torch.logit(path.u[0])]
    z_cond, dz = conditional_logit(x, a, vs[0])
    zeta = torch.stack([a - Z[0], z_cond]).requires_grad_(True)
    c = surrogate(problem, 0, phi[0], zeta, Z)
    (dc,) = torch.autograd.grad(c.sum(), zeta)
    f = problem.loss_of(x)
    score = problem.noise_law.score(x, a)
    if variant == "constant z~":
        delta = (f - c[1].detach()).unsqueeze(-1) * score + dc[0] - dc[1]
    else:
        delta = (f - c[1].detach()).unsqueeze(-1) * score + dc[0]
    return [problem.param_grad(0, delta, path.inputs[0]), head_grad(problem, problem.enc(x))]


@pytest.mark.parametrize("variant", ["constant z~", "no conditional"])
def test_quadrature_has_teeth(variant):
    p = build_problem("toy-psa1")
    state = random_state(p, 3)
    mean, _ = quad_mean_var(p, lambda path, vs: _wrong_grads(p, state.phi, path, vs, variant))
    assert float((mean["layer0"] - exact(p).grads["layer0"]).abs().max()) > 1e-3


# ---- 3a. adaptation lowers the exact variance on the toys --------------------------------------------------------

@pytest.mark.parametrize("toy", TOYS)
def test_adaptation_lowers_exact_variance_on_toy(toy):
    """Default options, seeded: 50 Adam steps cut the exact variance of the bias coordinate at least fourfold
    (measured: about 15x on both toys)."""
    p = build_problem(toy)
    est = Relax()
    g = torch.Generator().manual_seed(0)
    init = est.init_state(p, g)
    adapted = est.adapt(p, init, est.adapt_steps, g)
    _, v0 = quad_mean_var(p, lambda path, vs: relax_grads(p, init.phi, path, vs))
    _, v1 = quad_mean_var(p, lambda path, vs: relax_grads(p, adapted.phi, path, vs))
    assert float(v1["layer0"][1]) <= 0.25 * float(v0["layer0"][1]), (float(v0["layer0"][1]), float(v1["layer0"][1]))


# ---- 2. seeded statistical unbiasedness on deep networks ----------------------------------------------------------

ALPHA, BETA = 1e-4, 1e-3
PILOT, MIN_N, CHUNK = 4096, 20_000, 2**15
#: name -> (problem spec, relative bias size r, cap on N, slow)
PROBLEMS = {
    "pm1-logistic": ("random:widths=2-3-3,points=4,seed=20", 0.2, 400_000, False),
    "01-logistic": ("random:widths=2-3-3,points=4,encoding=01,seed=7", 0.1, 1_000_000, True),
    "deep-pm1-logistic": ("random:widths=2-3-3-3,points=4,seed=6", 0.1, 1_000_000, True),
    "deep-01-softmax": ("random:widths=2-3-3-3,points=4,encoding=01,loss=softmax,seed=6", 0.2, 1_000_000, True),
}
#: one-sided variance checks (3b): the hidden groups of the pm1-logistic network
VARIANCE_CHECKS = ("layer0", "layer1")


@lru_cache(maxsize=None)
def get_problem(key: str):
    return build_problem(PROBLEMS[key][0]).to(dtype=torch.float64)


@lru_cache(maxsize=None)
def get_exact(key: str) -> dict[str, torch.Tensor]:
    return exact(get_problem(key)).grads


@lru_cache(maxsize=None)
def z_values() -> tuple[float, float, float, int]:
    r"""$(z_{1-\alpha/(2m)}, z_{1-\alpha/m}, z_{1-\beta}, m)$ for the whole module (slow cases included)."""
    m = sum(sum(get_problem(k).group_sizes) for k in PROBLEMS) + len(VARIANCE_CHECKS)
    return float(norm.isf(ALPHA / (2 * m))), float(norm.isf(ALPHA / m)), float(norm.isf(BETA)), m


def test_bonferroni_budget():
    za, zv, _, m = z_values()
    coords = sum(sum(get_problem(k).group_sizes) for k in PROBLEMS)
    assert m == coords + len(VARIANCE_CHECKS)
    assert coords * 2 * norm.sf(za) + len(VARIANCE_CHECKS) * norm.sf(zv) == pytest.approx(ALPHA)


def z_test(estimator, key: str, label: str) -> tuple[float, list[str]]:
    """This module's problems and design through :func:`helpers.designed_z_test`."""
    za, _, zb, m = z_values()
    return designed_z_test(estimator, get_problem(key), get_exact(key), r=PROBLEMS[key][1], cap=PROBLEMS[key][2],
                           za=za, zb=zb, m=m, label=label, key=key, pilot=PILOT, min_n=MIN_N, chunk=CHUNK)


@pytest.mark.parametrize("key", [pytest.param(k, marks=[pytest.mark.stat] + ([pytest.mark.slow] if v[3] else []))
                                 for k, v in PROBLEMS.items()])
def test_unbiased_against_exact_gradient(key):
    worst, bad = z_test(Relax(), key, "relax")
    assert not bad, "\n".join(bad)


class _ConstantZTilde(Relax):
    """RELAX without the factor dz~/da (z~ treated as independent of theta; biased): the statistical test must
    reject it."""

    def _draws(self, problem, state, draws, generator):
        path = sample_path(problem, draws, generator)
        vs = draw_conditional_uniforms(path, generator)
        law, grads = problem.noise_law, []
        Z = [torch.logit(u.clamp(1e-15, 1 - 1e-15)) for u in path.u]
        f = problem.loss_of(path.x[-1])
        for k in range(problem.depth):
            a, x = path.a[k], path.x[k]
            z_cond, _ = conditional_logit(x, a, vs[k])
            zeta = torch.stack([a - Z[k], z_cond]).requires_grad_(True)
            with torch.enable_grad():
                c = surrogate(problem, k, state.phi[k], zeta, Z)
                (dc,) = torch.autograd.grad(c.sum(), zeta)
            delta = (f - c[1].detach()).unsqueeze(-1) * law.score(x, a) + dc[0] - dc[1]
            grads.append(problem.param_grad(k, delta, path.inputs[k]))
        grads.append(head_grad(problem, problem.enc(path.x[-1])))
        return grads


@pytest.mark.stat
def test_statistical_test_has_teeth():
    """Dropping dz~/da is caught with a wide margin (measured max |z| about 97 against the threshold 4.95)."""
    worst, bad = z_test(_ConstantZTilde(), "pm1-logistic", "biased-relax")
    za = z_values()[0]
    assert bad and worst > za, f"max |z| = {worst:.2f} <= {za:.2f}: the test has no teeth"


# ---- 3b. adaptation lowers the variance on a deep network (paired Monte Carlo) -------------------------------------

RATIO_BOUND = 0.85  # the claim: adapted trace variance <= 85% of the initial (REBAR) one, per hidden group
RATIO_POWER = 0.75  # design: a true ratio of 0.75 passes with probability >= 1 - beta
VAR_DRAWS = 2**15


@pytest.mark.stat
def test_adaptation_lowers_variance_on_network():
    r"""One-sided: fail if $\log\hat R+z_{1-\alpha/m}\mathrm{SE}>\log0.85$, $\hat R$ the ratio of trace variances
    of the adapted and the initial state on the same draws (common random numbers), SE by the delta method
    from the paired per-draw squared deviations.  Power asserted: $\mathrm{SE}(z_{1-\alpha/m}+z_{1-\beta})\le
    \log(0.85/0.75)$.  Measured ratios: about 0.52 and 0.66."""
    p = get_problem("pm1-logistic")
    est = Relax()
    g = torch.Generator().manual_seed(11)
    init = est.init_state(p, g)
    adapted = est.adapt(p, init, est.adapt_steps, g)
    g0 = est.estimate_with(p, init, VAR_DRAWS, torch.Generator().manual_seed(12))
    g1 = est.estimate_with(p, adapted, VAR_DRAWS, torch.Generator().manual_seed(12))
    _, zv, zb, _ = z_values()
    for name in VARIANCE_CHECKS:
        q0 = ((g0[name] - g0[name].mean(0)) ** 2).sum(1)
        q1 = ((g1[name] - g1[name].mean(0)) ** 2).sum(1)
        log_ratio = math.log(float(q1.mean() / q0.mean()))
        se = float((q1 / q1.mean() - q0 / q0.mean()).std()) / math.sqrt(VAR_DRAWS)
        assert se * (zv + zb) <= math.log(RATIO_BOUND / RATIO_POWER), f"{name}: design too weak, SE {se:.3g}"
        assert log_ratio + zv * se <= math.log(RATIO_BOUND), (name, math.exp(log_ratio), se)


# ---- 4. determinism, the state API, special cases, declarations ---------------------------------------------------

SMALL = "random:widths=2-3-3,points=4,seed=20"


def test_deterministic_under_the_explicit_generator():
    p = build_problem(SMALL)
    est = Relax(adapt_steps=10, adapt_draws=4)
    before = torch.random.get_rng_state()
    a = est.estimate(p, 40, torch.Generator().manual_seed(4))
    b = est.estimate(p, 40, torch.Generator().manual_seed(4))
    c = est.estimate(p, 40, torch.Generator().manual_seed(5))
    assert torch.equal(torch.random.get_rng_state(), before)  # the global generator is never used
    assert all(torch.equal(a[k], b[k]) for k in p.group_names)
    assert not torch.equal(a["layer0"], c["layer0"])


@pytest.mark.parametrize("draws, steps", [(30, 12), (11, 5), (1, 0)])
def test_estimate_is_init_adapt_then_estimate_with(draws, steps):
    """A call adapts min(adapt_steps, draws // adapt_draws) steps, then draws."""
    p = build_problem(SMALL)
    est = Relax(adapt_steps=12, adapt_draws=2, hidden=4)
    assert est.steps_for(draws) == steps
    want = est.estimate(p, draws, torch.Generator().manual_seed(8))
    g = torch.Generator().manual_seed(8)
    state = est.init_state(p, g)
    state = est.adapt(p, state, steps, g)
    got = est.estimate_with(p, state, draws, g)
    assert all(torch.equal(want[k], got[k]) for k in p.group_names)
    assert state.steps == steps and state.hidden == 4 and len(state.phi) == p.depth


def test_adaptation_can_be_split_and_the_state_saved():
    p = build_problem(SMALL)
    est = Relax(hidden=4)
    g = torch.Generator().manual_seed(3)
    s0 = est.init_state(p, g)
    snapshot = [t.clone() for layer in s0.phi for t in layer]
    whole = est.adapt(p, s0, 20, g)
    assert all(torch.equal(a, b) for a, b in zip(snapshot, (t for layer in s0.phi for t in layer)))  # not modified
    g = torch.Generator().manual_seed(3)
    s = est.init_state(p, g)
    s = est.adapt(p, est.adapt(p, s, 8, g), 12, g)  # carried across calls, Adam moments included
    for x, y in zip((t for layer in whole.phi + whole.m + whole.v for t in layer),
                    (t for layer in s.phi + s.m + s.v for t in layer)):
        assert torch.equal(x, y)
    buf = io.BytesIO()
    torch.save(s.to_dict(), buf)
    buf.seek(0)
    loaded = RelaxState.from_dict(torch.load(buf, weights_only=True))
    a = est.estimate_with(p, s, 6, torch.Generator().manual_seed(9))
    b = est.estimate_with(p, loaded, 6, torch.Generator().manual_seed(9))
    assert all(torch.equal(a[k], b[k]) for k in p.group_names)
    assert set(loaded.layer(0)) == set(PARAM_NAMES) and loaded.steps == 20


def test_state_must_fit_the_problem():
    p = build_problem(SMALL)
    state = Relax(hidden=4).init_state(p, torch.Generator().manual_seed(0))
    with pytest.raises(InputError):
        Relax(hidden=5).estimate_with(p, state, 3, torch.Generator())
    with pytest.raises(InputError):
        Relax(hidden=4).estimate_with(random_problem("2-4-3"), state, 3, torch.Generator())
    with pytest.raises(InputError):
        Relax(hidden=4).estimate_with(p.to(dtype=torch.float32), state, 3, torch.Generator())
    with pytest.raises(InputError):
        Relax(hidden=4).estimate_with(p, state, 0, torch.Generator())
    with pytest.raises(InputError):
        RelaxState.from_dict({"phi": []})


def _dense_twin(p):
    """The fully connected network computing the same function as the convolutional ``p``."""
    weights, biases = [], []
    for W, b, geom in zip(p.weights, p.biases, p.conv):
        if geom is None:
            weights.append(W), biases.append(b)
            continue
        eye = torch.eye(geom.in_size, dtype=W.dtype).reshape(-1, geom.channels, geom.height, geom.width)
        weights.append(torch.nn.functional.conv2d(eye, W, None, geom.stride, geom.padding).reshape(geom.in_size, -1).T)
        ho, wo = geom.out_hw()
        biases.append(b.repeat_interleave(ho * wo))
    return p.replace(weights=tuple(weights), biases=tuple(biases), conv=(None,) * p.depth)


def test_convolutional_network_adapts_like_its_dense_twin():
    """The adaptation objective lives on units, so a conv network and its dense twin learn the same surrogate
    (the contract's conv-twin test calls with 3 draws, which adapt nothing)."""
    p = build_problem("conv:input=2x5x4,channels=3-2,kernels=3-1,strides=2-1,paddings=1-0,points=3,seed=4")
    p = p.to(dtype=torch.float64)
    est = Relax(adapt_draws=8)
    states = [est.adapt(q, est.init_state(q, torch.Generator().manual_seed(6)), 20, torch.Generator().manual_seed(7))
              for q in (p, _dense_twin(p))]
    for x, y in zip(*(tuple(t for layer in s.phi for t in layer) for s in states)):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)
    heads = [est.estimate_with(q, s, 5, torch.Generator().manual_seed(8))["head"]
             for q, s in zip((p, _dense_twin(p)), states)]
    torch.testing.assert_close(heads[0], heads[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("encoding", ["pm1", "01"])
def test_initial_state_is_rebar(encoding):
    """At the initial state (w2 = 0, eta = 1, tau) the surrogate is REBAR's control variate, and the draws
    (path, then v) come in REBAR's order: the same estimates to rounding."""
    p = random_problem("2-3-4-3", seed=1, points=5, encoding=encoding, loss="softmax")
    est = Relax(tau=0.7)
    state = est.init_state(p, torch.Generator().manual_seed(0))
    got = est.estimate_with(p, state, 6, torch.Generator().manual_seed(5))
    want = Rebar(tau=0.7).estimate(p, 6, torch.Generator().manual_seed(5))
    for k in p.group_names:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12)


def test_same_state_same_estimator_in_both_encodings():
    """For a fixed state the surrogate is a function of relaxed logits only: the 0/1 estimate is the pm1 one
    in the other parametrisation (the adaptation itself weighs the parametrisations' layer inputs)."""
    pm = random_problem("3-4-3-2", seed=5, points=6, encoding="pm1", loss="softmax")
    state = random_state(pm, 7)
    est = Relax(hidden=5)
    g_pm = list(est.estimate_with(pm, state, 6, torch.Generator().manual_seed(3)).values())
    g_01 = list(est.estimate_with(to_01(pm), state, 6, torch.Generator().manual_seed(3)).values())
    for a, b in zip(g_pm, pull_back_01(pm, g_01)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_declarations_options_and_cost():
    est = registry.get("relax:hidden=8,adapt_steps=0,lr=0.1,tau=0.3,adapt_draws=4")
    assert isinstance(est, Relax) and (est.hidden, est.adapt_steps, est.lr, est.tau, est.adapt_draws) == (8, 0, 0.1,
                                                                                                       0.3, 4)
    d = est.declarations()
    assert d["unbiased"] and d["paths_per_draw"] == 1 and not d["path_deterministic"] and d["noises"] == ("logistic",)
    for bad in ("hidden=0", "adapt_steps=-1", "lr=0", "tau=0", "adapt_draws=0", "hidden=1.5"):
        with pytest.raises(InputError):
            registry.get(f"relax:{bad}")
    with pytest.raises(InputError):
        est.estimate(random_problem("2-3", noise="gaussian"), 2, torch.Generator())
    c = est.cost(random_problem("2-3-3-3"))
    assert (c.layer_evals, c.head_evals, c.backward_passes) == (3 + 3 * 4, 7, 6)
    # adapt_steps=0: the estimate is REBAR's after the initial state's draws
    p = build_problem(SMALL)
    out = est.estimate(p, 4, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    est.init_state(p, g)
    want = Rebar(tau=0.3).estimate(p, 4, g)
    for k in p.group_names:
        torch.testing.assert_close(out[k], want[k], rtol=1e-10, atol=1e-12)
