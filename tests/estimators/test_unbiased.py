r"""Seeded statistical unbiasedness tests with a designed false-fail rate and power (``docs/gate.md#tiers``, Tier 1).

Design (stated once, enforced by assertions):

- **Statistic.** Per coordinate $z=(\bar g-g)/\mathrm{SE}$, $\mathrm{SE}=s/\sqrt N$, over $N$ draws
  accumulated in float64 chunks (Chan's merge); $g$ is the exact float64 gradient
  (:func:`reference.exact.exact`).
- **False-fail rate.** Fail if $|z|>z_{1-\alpha/(2m)}$ with a family-wise $\alpha=4.8\cdot10^{-4}$
  and $m$ = every coordinate x estimator x problem of this module's suite, slow cases included
  (Bonferroni).  With the $2\cdot10^{-5}$ of the variance gate in ``test_reinforce.py`` this is the
  $5\cdot10^{-4}$ share (of the whole test suite's $10^{-3}$) of the unbiased-estimator tests.
- **Power.** $\delta_{\text{group}}=r\,\lVert g_{\text{group}}\rVert/\sqrt{\text{size}}$, the group's
  gradient norm spread over its coordinates, with $r=0.1$ on the random networks, $0.2$ for the
  default tier's one-variant-per-family run on the 0/1-softmax-Gaussian one (to bound CI time; the
  other variants run there at $r=0.1$ in the slow tier) and $0.3$ on the PSA network (10 of its
  200 points, one variant per family, REINFORCE with the pilot baseline).  $N$ is
  chosen from a pilot run (independent seed) as $1.5\,((z_{1-\alpha/(2m)}+z_{1-\beta})\,
  s_{\max}/\delta)^2$ with $\beta=10^{-3}$, capped per case; the test then **asserts**
  $\mathrm{SE}\,(z_{1-\alpha/(2m)}+z_{1-\beta})\le\delta$ on the final sample, so a bias of size
  $\delta$ in any coordinate is caught with probability $\ge1-\beta$.
- **Teeth.** The same statistic rejects deliberately biased variants: REINFORCE whose baseline is
  the batch mean of the draw's own losses (hidden gradient scaled by $1-1/B$, a bias of
  $\lVert g\rVert/B=1.25\,\delta$ for $B=8$), ARM with a flipped sign, DisARM with $\sigma(\phi)$
  instead of $\sigma(|\phi|)$, and MuProp without its analytic correction term.

The problems were picked (seeds scanned once) so that no parameter group has a vanishing gradient
relative to the estimators' noise; they cover both encodings, the logistic and softmax losses,
logistic, Gaussian and uniform noise, depths 2 and 3, and a convolutional network (slow tier).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pytest
import torch
from scipy.stats import norm

from estimators import registry
from estimators.families.arm import antithetic_losses, dphi_da
from estimators.families.arm import DisArm
from estimators.model import Problem, head_grad, layer_grad, sample_path
from estimators.families.muprop import MuProp
from estimators.families.reinforce import Reinforce, score_grads
from helpers import FlippedArm, designed_z_test, drop_analytic_term
from reference.exact import exact
from reference.problems import build_problem

ALPHA, BETA = 4.8e-4, 1e-3  # + 2e-5 in test_reinforce.py's variance gate = this suite's 5e-4
PILOT, MIN_N, CHUNK = 4096, 20_000, 2**15

ESTIMATORS = [
    "reinforce", "reinforce:baseline=constant,value=0.5", "reinforce:baseline=pilot", "reinforce:baseline=ema",
    "reinforce-loo", "reinforce-loo:K=3", "arm", "arm:shared=True", "disarm", "disarm:shared=True",
    "muprop", "muprop:point=input", "local-expectation", "local-expectation:shared=True",
]
#: Unbiased for logistic noise only (its importance weights need bounded log-ratios): the logistic problems.
LOGISTIC_ONLY = ["psa-iw"]
#: One variant per family, for the default tier's second problem.
FAMILY = ["reinforce:baseline=ema", "reinforce-loo", "arm:shared=True", "disarm", "muprop", "local-expectation"]
#: One variant per family on the PSA network (plain REINFORCE would need ~1.4e7 draws there, ~12 CPU-minutes;
#: it differs from the pilot-baseline variant only by c = 0 and is covered on every other problem).
PSA_ESTIMATORS = ["reinforce:baseline=pilot", "reinforce-loo", "arm:shared=True",
                  "disarm:shared=True", "muprop:point=input", "local-expectation:shared=True"]

_SOFTMAX_GAUSS = "random:widths=2-3-3,points=8,encoding=01,loss=softmax,scale=2,noise=gaussian,seed=17"
#: name -> (problem spec, data subset, relative bias size r, cap on N, slow, estimators)
PROBLEMS = {
    "pm1-logistic": ("random:widths=2-3-3,points=8,seed=20", None, 0.1, 2_000_000, False, ESTIMATORS + LOGISTIC_ONLY),
    "01-softmax-gauss": (_SOFTMAX_GAUSS, None, 0.2, 2_000_000, False, FAMILY),
    "01-softmax-gauss-rest": (_SOFTMAX_GAUSS, None, 0.1, 4_000_000, True, [e for e in ESTIMATORS if e not in FAMILY]),
    "pm1-uniform": ("random:widths=2-3-3,points=8,noise=uniform,seed=22", None, 0.1, 2_000_000, True, ESTIMATORS),
    "deep-pm1-softmax-gauss": ("random:widths=2-3-3-3,points=8,loss=softmax,noise=gaussian,seed=8", None, 0.1,
                               4_000_000, True, ESTIMATORS),
    "deep-01-logistic": ("random:widths=2-3-3-3,points=8,encoding=01,scale=2,seed=8", None, 0.1, 4_000_000, True,
                         ESTIMATORS),
    # psa-iw's importance weights are heavy-tailed at scale 2 (its 4096-draw pilot underestimates the variance
    # there, so the asserted power fails); its exact mean is checked on such networks by path enumeration
    "deep-pm1-logistic": ("random:widths=2-3-3-3,points=8,seed=8", None, 0.1, 4_000_000, True, LOGISTIC_ONLY),
    "psa-2-5-5-5-sub10": ("psa-2-5-5-5", slice(0, 200, 20), 0.3, 30_000_000, True, PSA_ESTIMATORS),
    "conv-tiny": ("conv-tiny:seed=10", None, 0.1, 4_000_000, True, FAMILY),
}


@lru_cache(maxsize=None)
def get_problem(key: str) -> Problem:
    spec, subset, *_ = PROBLEMS[key]
    p = build_problem(spec).to(dtype=torch.float64)
    return p.subset(subset) if subset is not None else p


@lru_cache(maxsize=None)
def get_exact(key: str) -> dict[str, torch.Tensor]:
    return exact(get_problem(key)).grads


@lru_cache(maxsize=None)
def z_values() -> tuple[float, float, int]:
    """$(z_{1-\\alpha/(2m)}, z_{1-\\beta}, m)$ for the whole suite (slow cases included)."""
    m = sum(len(PROBLEMS[k][5]) * sum(get_problem(k).group_sizes) for k in PROBLEMS)
    return float(norm.isf(ALPHA / (2 * m))), float(norm.isf(BETA)), m


def z_test(estimator, key: str, label: str) -> tuple[float, list[str]]:
    """Run the designed test (:func:`helpers.designed_z_test`); return the largest |z| and the rows
    that exceed the threshold."""
    za, zb, m = z_values()
    _, _, r, cap, _, _ = PROBLEMS[key]
    return designed_z_test(estimator, get_problem(key), get_exact(key), r=r, cap=cap, za=za, zb=zb, m=m,
                           label=label, key=key, pilot=PILOT, min_n=MIN_N, chunk=CHUNK)


CASES = [pytest.param(e, k, marks=[pytest.mark.stat] + ([pytest.mark.slow] if PROBLEMS[k][4] else []),
                      id=f"{e}-{k}") for k in PROBLEMS for e in PROBLEMS[k][5]]


@pytest.mark.parametrize("spec, key", CASES)
def test_unbiased(spec, key):
    worst, bad = z_test(registry.get(spec), key, spec)
    assert not bad, "\n".join(bad)


def test_suite_covers_my_estimators():
    """Every estimator family of this suite is registered and listed as unbiased."""
    for spec in ESTIMATORS + LOGISTIC_ONLY:
        est = registry.get(spec)
        assert type(est).unbiased, spec
    names = {registry.parse_spec(s)[0] for s in ESTIMATORS + LOGISTIC_ONLY}
    assert names == {"reinforce", "reinforce-loo", "arm", "disarm", "muprop", "local-expectation", "psa-iw"}


def test_bonferroni_budget():
    za, zb, m = z_values()
    assert m == sum(len(PROBLEMS[k][5]) * sum(get_problem(k).group_sizes) for k in PROBLEMS)
    assert m * 2 * norm.sf(za) == pytest.approx(ALPHA)


# ---- teeth: deliberately biased variants must be rejected -----------------------------------------------------
@dataclass(frozen=True)
class SelfBaselineReinforce(Reinforce):
    """REINFORCE with the batch mean of the draw's *own* losses as baseline: biased by a factor 1 - 1/B."""

    def _estimate(self, problem, draws, generator):
        path = sample_path(problem, draws, generator)
        f = problem.loss_of(path.x[-1])
        return score_grads(problem, path, f - f.mean(1, keepdim=True))


@dataclass(frozen=True)
class SignedPhiDisArm(DisArm):
    r"""DisARM with $\sigma(\phi)$ in place of $\sigma(|\phi|)$ (a plausible transcription error)."""

    def from_path(self, problem, path, generator):
        law = problem.noise_law
        grads = []
        for k in range(problem.depth):
            a, b = path.a[k], path.x[k]
            bt, ft, fb = antithetic_losses(problem, path, k, generator)
            g_a = 0.25 * (fb - ft).unsqueeze(-1) * (b - bt) * law.cdf(a) * dphi_da(problem, a)
            grads.append(layer_grad(g_a, path.inputs[k]))
        grads.append(head_grad(problem, problem.enc(path.x[-1])))
        return grads


@dataclass(frozen=True)
class UncorrectedMuProp(MuProp):
    """MuProp without the analytic term: the control variate's mean is never added back."""

    def from_path(self, problem, path, generator=None):
        # subtract the analytic term J * 2F'(a) again, recomputed the same way as in MuProp
        return drop_analytic_term(problem, path, super().from_path(problem, path))


@pytest.mark.stat
@pytest.mark.parametrize("variant", [SelfBaselineReinforce(), FlippedArm(), SignedPhiDisArm(), UncorrectedMuProp()],
                         ids=["reinforce-self-baseline", "arm-flipped-sign", "disarm-sigma-phi",
                              "muprop-no-correction"])
def test_teeth_biased_variants_are_rejected(variant):
    key = "pm1-logistic"
    worst, bad = z_test(variant, key, f"biased-{type(variant).__name__}")
    za, _, _ = z_values()
    assert bad and worst > za, f"{type(variant).__name__}: max |z| = {worst:.2f} <= {za:.2f}; the test has no teeth"
