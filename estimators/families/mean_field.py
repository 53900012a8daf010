r"""tanh mean-field: the deterministic network of unit means, differentiated (spec §5.11).

$$m^0=x^0,\qquad m^k=\mathbb E[\mathrm{enc}(x^k)\mid a^k(m^{k-1})]=\begin{cases}2F(a^k)-1&\text{pm1 (logistic: }\tanh(a/2))\\
F(a^k)&\text{01}\end{cases},\qquad \hat g=\nabla_\theta f(m^L).$$

No sampling: zero variance and a constant bias, which can point the wrong way (cosine $-0.39$ at
layer 0 of the PSA paper's chk-2000 network).  Exact only when $f$ is linear in the states and the
network has one stochastic layer.  The mean network is the same function in both encodings.
Cost: one deterministic pass and one backward pass, independent of the number of draws.

References: Shekhovtsov, Yanush & Flach, NeurIPS 2020, arXiv:2006.03143 ("tanh" baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..base import Cost, Estimator
from ..model import Problem, backprop
from ..registry import register

__all__ = ["TanhMeanField"]


@register
@dataclass(frozen=True)
class TanhMeanField(Estimator):
    r"""Deterministic mean-field ("tanh"): propagate $m^k=\mathbb E[\mathrm{enc}(x^k)\mid a^k(m^{k-1})]$, differentiate $f(m^L)$.

    Backprop slopes are $c\,F'(a)$ ($c=2$ in ``pm1``, 1 in ``01``).  Biased (deterministic, constant
    bias); ignores the generator and returns ``draws`` identical rows.  Not path-deterministic (it
    uses no path).  Cost: one deterministic pass plus one backward, once per call.
    """

    name: ClassVar[str] = "tanh"
    unbiased: ClassVar[bool] = False
    path_deterministic: ClassVar[bool] = False
    summary: ClassVar[str] = "deterministic tanh mean-field network, differentiated (zero variance)"

    def cost(self, problem: Problem) -> Cost:
        return Cost(layer_evals=problem.depth, head_evals=1, backward_passes=1)

    def _estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        law = problem.noise_law
        inp = problem.X.unsqueeze(0)  # one "draw": [1, B, n0]
        inputs, slopes = [], []
        for k in range(problem.depth):
            a = problem.preact(k, inp)
            inputs.append(inp)
            slopes.append(problem.mean_slope * law.pdf(a))
            inp = problem.enc(2 * law.cdf(a) - 1)
        grads = backprop(problem, inputs, slopes, inp)
        return [g.expand(draws, -1).clone() for g in grads]
