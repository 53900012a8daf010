r"""Local reparameterisation: moment propagation with a sampled Gaussian pre-activation
(``docs/estimators/relaxations.md#local-reparameterisation``).

As ADF (:mod:`estimators.families.adf`), every unit is passed on by its mean and variance, but instead of the
Gaussian expectation each layer samples its pre-activation,
$$\mu=Wm+b,\quad s^2=(W\odot W)\,v,\quad a=\mu+s\,\varepsilon,\ \varepsilon\sim\mathcal N(0,1),\quad P=F(a),$$
and passes on mean $2P-1$, variance $4P(1-P)$ (0/1: $P$, $P(1-P)$).  The first layer reads the real
input ($s=0$): there $P=F(\mu)$, no sample.  The head is treated as in ADF (``head="mean"`` feeds the
mean logits to the loss, ``head="sample"`` one reparameterised Gaussian sample of the logits).

References: Kingma, Salimans & Welling, NeurIPS 2015 (local reparameterisation); Shayer, Levi &
Fetaya, ICLR 2018; the PSA paper (arXiv:2006.03143), where it is a CIFAR-10 baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..base import Cost, Estimator
from ..model import Problem
from ..model.per_draw import per_replica_grads, replicate, unpack
from ..options import option
from ..registry import register
from .adf import HEADS, head_noise, propagate

__all__ = ["LocalReparam", "layer_noise"]


def layer_noise(problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor | None]:
    """Standard normal ``[D, B, n_k]`` per layer; ``None`` for the first layer, which has $s=0$."""
    shape = lambda n: (draws, problem.batch_size, n)  # noqa: E731
    return [None] + [
        torch.randn(shape(n), generator=generator, dtype=problem.dtype, device=problem.device)
        for n in problem.widths[2:]
    ]


@register
@dataclass(frozen=True)
class LocalReparam(Estimator):
    r"""Local reparameterisation: pathwise gradient of the sampled moment-propagated surrogate.

    Formula: $\hat g=\nabla_\theta\,f\big(\eta(\theta,\varepsilon)\big)$, where $\eta$ is the head
    output of the recursion above for one draw of $\varepsilon$ per unit (and per logit with
    ``head="sample"``); an unbiased estimate of $\nabla_\theta\,\mathbb E_\varepsilon f$, the gradient
    of the *surrogate* expected loss.

    Biased for the SBN objective: the surrogate replaces sums of binary states by Gaussians with
    matched moments (independence and central-limit approximations) and the head by its mean or a
    Gaussian sample.

    Cost per draw: two passes (means and variances, $2L$ layer evaluations), 1 head evaluation and
    one backward pass (per-draw parameter copies, one autograd call for all draws).
    """

    name: ClassVar[str] = "local-reparam"
    unbiased: ClassVar[bool] = False
    summary: ClassVar[str] = "local reparameterisation: sampled Gaussian pre-activations, moments passed on"

    head: str = option("mean", choices=HEADS, help="mean: the head at the propagated mean; sample: one Gaussian sample")

    def _estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        eps = layer_noise(problem, draws, generator)
        eta_eps = head_noise(problem, draws, generator) if self.head == "sample" else None
        with torch.enable_grad():
            leaves = replicate(problem, draws)
            return per_replica_grads(propagate(problem, unpack(problem, leaves), eps, eta_eps), leaves)

    def cost(self, problem: Problem) -> Cost:
        return Cost(layer_evals=2 * problem.depth, head_evals=1, backward_passes=1)
