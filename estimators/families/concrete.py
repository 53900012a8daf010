r"""Concrete / Gumbel-Softmax relaxation of the whole SBN (``docs/estimators/relaxations.md#concrete``).

Each unit $x=\operatorname{sign}(a-Z)$ is replaced by a smooth function of **the same** noise,
$Z=F^{-1}(u)$ with $u\sim U(0,1)$, in the suite's temperature convention ($\tau$ in sigmoid form):
$$x^{01}=\sigma\big((a-Z)/\tau\big),\qquad x^{\pm}=2x^{01}-1=\tanh\big((a-Z)/(2\tau)\big).$$
The relaxed values feed the next layers and the head, and the relaxed network is differentiated
end to end.  Since $\mathrm{enc}(x^\pm)=x^{01}$, the relaxed network is the same in both encodings
(only the parametrisation differs).  With logistic $Z$ this is the Binary Concrete distribution;
Gaussian and uniform noise give the analogous relaxations.

References: Maddison, Mnih & Teh, ICLR 2017; Jang, Gu & Poole, ICLR 2017.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..base import Cost, Estimator
from ..errors import InputError
from ..model import Problem, backprop
from ..options import option
from ..registry import register

__all__ = ["Concrete", "noise_quantile", "draw_uniforms", "relaxed_unit", "relaxed_grads"]


def draw_uniforms(problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One ``[D, B, n_k]`` uniform tensor per layer, drawn in the order :func:`~estimators.model.sample_path` uses."""
    return [
        torch.rand((draws, problem.batch_size, n), generator=generator, dtype=problem.dtype, device=problem.device)
        for n in problem.widths[1:]
    ]


def noise_quantile(noise: str, u: torch.Tensor) -> torch.Tensor:
    r"""$Z=F^{-1}(u)$: ``logit`` (logistic), ``ndtri`` (gaussian) or $2u-1$ (uniform).

    ``u`` is first clamped to $[\epsilon,1-\epsilon]$ ($\epsilon$ = the dtype's machine epsilon), so $Z$
    is finite ($|Z|\le16$ logistic, $\le5.3$ Gaussian in float32).
    """
    eps = torch.finfo(u.dtype).eps
    u = u.clamp(eps, 1.0 - eps)
    if noise == "logistic":
        return torch.logit(u)
    if noise == "gaussian":
        return torch.special.ndtri(u)
    if noise == "uniform":
        return 2.0 * u - 1.0
    raise InputError(f"unknown noise {noise!r}; choose one of logistic, gaussian, uniform")


def relaxed_unit(problem: Problem, t: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Encoded relaxed state and its slope at $t=(a-Z)/\tau$.

    Returns $(\mathrm{enc}(x),\ \partial\,\mathrm{enc}(x)/\partial a)$: $(\tanh(t/2),\ 2\sigma(t)\sigma(-t)/\tau)$
    in pm1 and $(\sigma(t),\ \sigma(t)\sigma(-t)/\tau)$ in 01.
    """
    slope = problem.flip_scale * torch.sigmoid(t) * torch.sigmoid(-t) / tau
    value = torch.tanh(0.5 * t) if problem.encoding == "pm1" else torch.sigmoid(t)
    return value, slope


def relaxed_grads(problem: Problem, uniforms: list[torch.Tensor], tau: float) -> list[torch.Tensor]:
    """Per-draw gradients of the relaxed network given one ``[D, B, n_k]`` uniform tensor per layer."""
    D = uniforms[0].shape[0]
    inp = problem.X.expand(D, *problem.X.shape)
    inputs, slopes = [], []
    for k, u in enumerate(uniforms):
        a = problem.preact(k, inp)
        value, slope = relaxed_unit(problem, (a - noise_quantile(problem.noise, u)) / tau, tau)
        inputs.append(inp)
        slopes.append(slope)
        inp = value
    return backprop(problem, inputs, slopes, inp)


@register
@dataclass(frozen=True)
class Concrete(Estimator):
    r"""Concrete (Gumbel-Softmax) relaxation, differentiated end to end.

    Formula: with $Z^k=F^{-1}(u^k)$ and relaxed states $r^k=\tanh((a^k-Z^k)/(2\tau))$ (pm1; $\sigma((a^k-Z^k)/\tau)$
    read in 01), $a^{k+1}=W^{k+1}\mathrm{enc}(r^k)+b^{k+1}$, the estimate is $\nabla_\theta f(r^L)$ by
    backpropagation with unit slopes $\frac{2}{\tau}\sigma'((a-Z)/\tau)$ (pm1) or
    $\frac1\tau\sigma'((a-Z)/\tau)$ (01).

    Biased for every $\tau>0$, the head included (the head sees relaxed states); the bias goes to 0
    as $\tau\to0$ (roughly $\propto\tau$ on the single-unit toy) while the variance grows (std
    $\sim\tau^{-1/2}$ for one unit, exploding in deep trained networks).

    Cost per draw: one pass ($L$ layer evaluations, 1 head evaluation) and one backward pass.
    """

    name: ClassVar[str] = "concrete"
    unbiased: ClassVar[bool] = False
    summary: ClassVar[str] = "Concrete/Gumbel-Softmax relaxation (tau in sigmoid form), end-to-end backprop"

    tau: float = option(1.0, gt=0.0, help="temperature of the relaxation")

    def _estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        return relaxed_grads(problem, draw_uniforms(problem, draws, generator), self.tau)

    def cost(self, problem: Problem) -> Cost:
        return Cost(layer_evals=problem.depth, head_evals=1, backward_passes=1)
