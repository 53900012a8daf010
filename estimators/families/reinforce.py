r"""REINFORCE (score-function) estimators: plain or with a baseline, and leave-one-out
(``docs/estimators/score-function.md#reinforce``).

For hidden layer $k$ the score term of one data point is
$$\hat g(\theta^k)=(f(x^L)-c)\,\nabla_{\theta^k}\log p(x^k\mid x^{k-1}),\qquad
\partial_{a^k_i}\log p(x^k_i\mid\cdot)=\frac{x^k_iF'(a^k_i)}{F(x^k_ia^k_i)},$$
and the head gradient is pathwise, $\nabla_{\theta^{L+1}}f(x^L)$.  The estimate is unbiased whenever
$c$ is independent of the draw's own $x^k$ and of everything sampled after it
(``docs/estimators/score-function.md#baselines``), since
$\mathbb E[\nabla\log p(x^k\mid x^{k-1})\mid x^{<k}]=0$.

References: Williams, Machine Learning 1992; Mnih & Gregor, ICML 2014 (baselines);
Kool, van Hoof & Welling, ICLR 2019 workshop (leave-one-out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..base import Cost, Estimator
from ..errors import InputError
from ..model import Path, Problem, head_grad, sample_path
from ..options import option
from ..registry import register

__all__ = ["Reinforce", "ReinforceLOO", "score_grads", "ema_baseline"]

BASELINES = ("none", "constant", "pilot", "ema")


def score_grads(problem: Problem, path: Path, weight: torch.Tensor) -> list[torch.Tensor]:
    """Per-draw group gradients ``weight * score`` for every layer, plus the pathwise head gradient.

    ``weight`` is the ``[D, B]`` factor $f-c$ multiplying each point's score.
    """
    law = problem.noise_law
    grads = [problem.param_grad(k, weight.unsqueeze(-1) * law.score(x, a), inp)
             for k, (x, a, inp) in enumerate(zip(path.x, path.a, path.inputs))]
    grads.append(head_grad(problem, problem.enc(path.x[-1])))
    return grads


def ema_baseline(f: torch.Tensor, decay: float, value: float) -> torch.Tensor:
    r"""$c_d=\mathrm{decay}^d\,\mathrm{value}+(1-\mathrm{decay})\sum_{j<d}\mathrm{decay}^{d-1-j}f_j$ along dim 0.

    The exponential moving average of the losses of the *earlier* draws, computed by a
    Hillis–Steele scan ($\lceil\log_2D\rceil$ vectorised steps, no overflow for any ``D``).
    """
    D = f.shape[0]
    s = torch.cat([torch.zeros_like(f[:1]), (1.0 - decay) * f[:-1]])  # windows of length 1
    step, w = 1, decay
    while step < D:
        s = torch.cat([s[:step], s[step:] + w * s[:-step]])  # windows of length 2*step
        step, w = 2 * step, w * w
    powers = torch.pow(torch.full((D,), decay, dtype=f.dtype, device=f.device),
                       torch.arange(D, dtype=f.dtype, device=f.device))
    return s + value * powers.view(-1, *([1] * (f.dim() - 1)))


@register
@dataclass(frozen=True)
class Reinforce(Estimator):
    r"""REINFORCE with an optional baseline $c$: $\hat g(\theta^k)=(f-c)\,\nabla_{\theta^k}\log p(x^k\mid x^{k-1})$.

    Baselines (``baseline=``):

    - ``none``: $c=0$ (the PSA paper's setting); ``constant``: $c=$ ``value``.
    - ``pilot``: $c_b$ = mean loss of point $b$ over ``pilot_draws`` independent paths sampled first
      from the same generator (once per call; every draw of the call shares it).
    - ``ema``: for draw $d$, $c_{d,b}$ = exponential moving average (``decay``) of point $b$'s losses
      in draws $0..d-1$ of the same call, starting from ``value`` (:func:`ema_baseline`).

    Unbiased for every baseline: $c$ depends only on paths independent of the draw it is used in.
    The draws of one call stay uncorrelated (each draw's score has zero mean given all other draws),
    so the usual standard error applies.  Path-deterministic (and :meth:`from_path` available) for
    ``none`` and ``constant`` only; instances with ``pilot``/``ema`` report
    ``path_deterministic == False``.

    Cost per draw: one sampled pass ($L$ layer evaluations, 1 head evaluation) and the per-layer
    weight-gradient outer products (counted as 1 backward pass).  ``pilot`` adds ``pilot_draws``
    passes once per call (amortised over the call's draws, not included in :meth:`cost`).
    """

    name: ClassVar[str] = "reinforce"
    unbiased: ClassVar[bool] = True
    paths_per_draw: ClassVar[int] = 1
    summary: ClassVar[str] = "score function (REINFORCE) with none/constant/pilot/EMA baseline; unbiased"

    baseline: str = option("none", choices=BASELINES, help="control variate subtracted from the loss")
    value: float = option(0.0, help="the constant baseline (and the EMA's starting value)",
                          only_with={"baseline": ("constant", "ema")})
    pilot_draws: int = option(64, ge=1, le=10**6, help="paths of the pilot baseline, once per call",
                              only_with={"baseline": ("pilot",)})
    decay: float = option(0.9, ge=0.0, le=1.0, help="EMA decay", only_with={"baseline": ("ema",)})

    @property
    def path_deterministic(self) -> bool:  # type: ignore[override]
        """Only the ``none`` and ``constant`` baselines make the estimate a function of the path alone."""
        return self.baseline in ("none", "constant")

    @property
    def has_from_path(self) -> bool:  # type: ignore[override]
        return self.path_deterministic

    def from_path(self, problem: Problem, path: Path, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Per-draw group gradients ``[D, size]`` from a given path (``none``/``constant`` baselines only)."""
        if not self.path_deterministic:
            raise InputError(f"estimator {self.spec} is not a function of the sampled path alone")
        c = self.value if self.baseline == "constant" else 0.0
        return score_grads(problem, path, problem.loss_of(path.x[-1]) - c)

    def _estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        if self.path_deterministic:
            return super()._estimate(problem, draws, generator)
        if self.baseline == "pilot":
            pilot = sample_path(problem, self.pilot_draws, generator)
            c = problem.loss_of(pilot.x[-1]).mean(0)  # [B]
            path = sample_path(problem, draws, generator)
            f = problem.loss_of(path.x[-1])
        else:  # ema
            path = sample_path(problem, draws, generator)
            f = problem.loss_of(path.x[-1])
            c = ema_baseline(f, self.decay, self.value)
        return score_grads(problem, path, f - c)

    def cost(self, problem: Problem) -> Cost:
        return Cost(layer_evals=problem.depth, head_evals=1, backward_passes=1)


@register
@dataclass(frozen=True)
class ReinforceLOO(Estimator):
    r"""Leave-one-out REINFORCE over $K$ jointly used paths per draw
    (``docs/estimators/score-function.md#leave-one-out``).

    $$\hat g=\frac1K\sum_{m=1}^K\Big(f_m-\frac1{K-1}\sum_{l\ne m}f_l\Big)\nabla\log p(x_{(m)})
    \;+\;\frac1K\sum_m\nabla_{\theta^{L+1}}f_m .$$

    Unbiased: path $m$'s baseline uses only the other, independent paths.  **One draw consumes
    ``K`` paths** per data point (``paths_per_draw == K``).  Because the paths are used jointly, the
    variance does not follow $1/K$.  Not path-deterministic in the single-path sense (one draw's
    estimate depends on its ``K`` paths jointly); :meth:`from_path` takes the ``K*D`` paths.

    Cost per draw: $K$ sampled passes ($KL$ layer evaluations, $K$ head evaluations) and $K$ sets of
    weight-gradient outer products (counted as $K$ backward passes).
    """

    name: ClassVar[str] = "reinforce-loo"
    unbiased: ClassVar[bool] = True
    path_deterministic: ClassVar[bool] = False
    has_from_path: ClassVar[bool] = True
    summary: ClassVar[str] = "leave-one-out REINFORCE over K paths per draw; unbiased"

    K: int = option(2, ge=2, le=10**4, help="paths per draw, each baselined by the other K-1")

    @property
    def paths_per_draw(self) -> int:  # type: ignore[override]
        return self.K

    def from_path(self, problem: Problem, path: Path, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Per-draw group gradients ``[D, size]`` from ``K*D`` given paths (path ``m`` of draw ``d`` is row ``m*D+d``)."""
        K = self.K
        draws = path.x[0].shape[0] // K
        f = problem.loss_of(path.x[-1]).view(K, draws, -1)
        c = (f.sum(0, keepdim=True) - f) / (K - 1)
        grads = score_grads(problem, path, (f - c).reshape(K * draws, -1))
        return [g.view(K, draws, -1).mean(0) for g in grads]

    def cost(self, problem: Problem) -> Cost:
        return Cost(layer_evals=self.K * problem.depth, head_evals=self.K, backward_passes=self.K)
