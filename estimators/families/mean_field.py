r"""tanh mean-field: the deterministic network of unit means, differentiated (``docs/estimators/relaxations.md#tanh``).

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

__all__ = ["TanhMeanField", "mean_field_grads", "mean_field_pass"]


def mean_field_pass(problem: Problem, inp: torch.Tensor, slopes: bool = True):
    r"""The deterministic pass of unit means from real inputs ``inp`` (``[D, B, n0]``).

    Returns what each layer read (``inputs[k]``, encoded), the backprop slopes $c\,F'(a^k)$ (``None``
    when ``slopes`` is false) and the encoded means $\mathrm{enc}(m^L)$ that the head reads.
    """
    law = problem.noise_law
    inputs, slope = [], []
    for k in range(problem.depth):
        a = problem.preact(k, inp)
        inputs.append(inp)
        if slopes:
            slope.append(problem.mean_slope * law.pdf(a))
        inp = problem.enc(2 * law.cdf(a) - 1)
    return inputs, (slope if slopes else None), inp


def mean_field_grads(problem: Problem, inp: torch.Tensor) -> list[torch.Tensor]:
    """Per-row group gradients ``[D, size]`` of the mean network at inputs ``inp`` (``[D, B, n0]``)."""
    inputs, slopes, out = mean_field_pass(problem, inp)
    return backprop(problem, inputs, slopes, out)


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
        grads = mean_field_grads(problem, problem.X.unsqueeze(0))  # one "draw": [1, B, n0]
        return [g.expand(draws, -1).clone() for g in grads]
