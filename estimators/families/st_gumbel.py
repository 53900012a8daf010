r"""Straight-through Gumbel-Softmax (ST-GS): hard forward, relaxed backward at the same noise
(``docs/estimators/relaxations.md#st-gumbel``).

Forward: the true binary SBN, $x^k=\operatorname{sign}(a^k-Z^k)$ with $Z^k=F^{-1}(u^k)$ (sampled as
$u^k<F(a^k)$ by :func:`~estimators.model.sample_path`); every layer and the head read the hard
states.  Backward: every unit is differentiated as its Concrete relaxation at the same noise,
$$\frac{\partial x^\pm}{\partial a}=\frac2\tau\,\sigma'\Big(\frac{a-Z}\tau\Big)
=\frac1{2\tau}\Big(1-\tanh^2\frac{a-Z}{2\tau}\Big),\qquad
\frac{\partial x^{01}}{\partial a}=\frac1\tau\,\sigma'\Big(\frac{a-Z}\tau\Big),$$
so the estimator is the same in both encodings (up to the parametrisation).

References: Jang, Gu & Poole, ICLR 2017 (straight-through Gumbel-Softmax); Bengio, Léonard &
Courville, arXiv:1308.3432 (straight-through).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..base import Cost, Estimator
from ..model import Path, Problem, backprop, sample_path
from ..options import option
from ..registry import register
from .concrete import noise_quantile, relaxed_unit

__all__ = ["STGumbel", "st_gumbel_grads"]


def st_gumbel_grads(problem: Problem, path: Path, tau: float) -> list[torch.Tensor]:
    """Per-draw ST-GS gradients on a sampled path (its states, pre-activations and uniforms)."""
    slopes = [
        relaxed_unit(problem, (a - noise_quantile(problem.noise, u)) / tau, tau)[1]
        for a, u in zip(path.a, path.u)
    ]
    return backprop(problem, path.inputs, slopes, problem.enc(path.x[-1]))


@register
@dataclass(frozen=True)
class STGumbel(Estimator):
    r"""Straight-through Gumbel-Softmax: sampled binary forward, Concrete-slope backward.

    Formula: backpropagation through the sampled network with unit derivatives
    $\frac2\tau\sigma'((a-Z)/\tau)$ (pm1) or $\frac1\tau\sigma'((a-Z)/\tau)$ (01), where $Z$ is the
    noise that produced the sampled state.

    Biased for every $\tau$ in the hidden layers (the head gradient, taken at the hard states, is
    unbiased); the bias falls roughly $\propto\tau$ as $\tau\to0$ on the single-unit toy while the
    standard deviation grows like $\tau^{-1/2}$.  As $\tau\to\infty$ the slope vanishes.

    Cost per draw: one sampled pass ($L$ layer evaluations, 1 head evaluation) and one backward pass.
    """

    name: ClassVar[str] = "st-gumbel"
    unbiased: ClassVar[bool] = False
    summary: ClassVar[str] = "straight-through Gumbel-Softmax: hard sample forward, relaxed derivative backward"

    tau: float = option(1.0, gt=0.0, help="temperature of the relaxed backward")

    def _estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        return st_gumbel_grads(problem, sample_path(problem, draws, generator), self.tau)

    def cost(self, problem: Problem) -> Cost:
        return Cost(layer_evals=problem.depth, head_evals=1, backward_passes=1)
