r"""REBAR: REINFORCE with a Concrete control variate, per layer (``docs/estimators/score-function.md#rebar``),
logistic noise.

For a unit with logit $a$ and logistic noise, $z=a-Z$ ($Z=\operatorname{logit}u$) gives the hard state
$b=\operatorname{sign}z$.  With a fresh $v\sim U(0,1)$, $\rho=\operatorname{logit}(1-v)$, the
conditional relaxed variable $\tilde z\sim p(z\mid b)$ is (derived from $\tilde Z=F^{-1}(v\,F(a))$
for $b=+1$ and its mirror image)
$$\tilde z=b\,\operatorname{softplus}\big(\rho+\operatorname{softplus}(b\,a)\big),\qquad
\frac{\partial\tilde z}{\partial a}=\sigma\big(\rho+\operatorname{softplus}(ba)\big)\,\sigma(ba).$$
REBAR with $\eta=1$ (Tucker et al. 2017):
$\hat g=\big(f(b)-c(\tilde z)\big)\nabla\log p(b)+\nabla c(z)-\nabla c(\tilde z)$, unbiased for any
differentiable $c$.

**Per layer in a deep SBN.**  For layer $k$ the upstream states are the sampled ones and
$c_k(\zeta)$ is the Concrete network run from layer $k$'s relaxed state $\zeta$ onward, with the
downstream layers relaxed at the main path's own noise $Z^{j>k}$ (temperature $\tau$ in the suite's
sigmoid convention, :mod:`estimators.families.concrete`).  $f$ is the sampled path's loss.  Given the
upstream states and the downstream noise (independent of $u^k,v^k$), $f$ and $c_k$ are fixed
functions of layer $k$'s state, so the REBAR identity applies layer by layer: unbiased.
The head gradient is the pathwise $\nabla_{\theta^{L+1}}f(x^L)$.

References: Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein, NeurIPS 2017 (REBAR);
Maddison, Mnih & Teh, ICLR 2017 (Concrete).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as nnf

from ..base import Cost, Estimator
from ..model import Problem, head_grad, sample_path
from ..options import option
from ..registry import register
from .concrete import noise_quantile, relaxed_unit

__all__ = ["Rebar", "conditional_logit", "relaxed_continuation"]


def conditional_logit(x: torch.Tensor, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""$\tilde z\sim p(z\mid b{=}x)$ for logistic noise from uniforms ``v``, and $\partial\tilde z/\partial a$."""
    eps = torch.finfo(v.dtype).eps
    rho = -torch.logit(v.clamp(eps, 1.0 - eps))  # logit(1 - v)
    inner = rho + nnf.softplus(x * a)
    return x * nnf.softplus(inner), torch.sigmoid(inner) * torch.sigmoid(x * a)


def relaxed_continuation(problem: Problem, k: int, zeta: torch.Tensor, Z: list[torch.Tensor],
                         tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Loss $c_k(\zeta)$ ``[..., B]`` of the Concrete network from layer ``k``'s relaxed logit ``zeta`` onward,
    downstream layers relaxed at the noises ``Z[j]``, and $\partial c_k/\partial\zeta$ (shaped like ``zeta``)."""
    inp, slope = relaxed_unit(problem, zeta / tau, tau)
    slopes = [slope]
    for j in range(k + 1, problem.depth):
        inp, slope = relaxed_unit(problem, (problem.preact(j, inp) - Z[j]) / tau, tau)
        slopes.append(slope)
    eta = problem.head(inp)
    g = problem.loss_fn.grad(eta, problem.y) @ problem.head_weight
    for j in range(problem.depth - 1, k, -1):
        g = problem.input_grad(j, g * slopes[j - k])
    return problem.loss_fn.value(eta, problem.y), g * slopes[0]


@register
@dataclass(frozen=True)
class Rebar(Estimator):
    r"""REBAR (fixed temperature, $\eta=1$), applied per stochastic layer; logistic noise only.

    Formula, layer $k$ (per data point, $\theta^k$ through $a^k$):
    $$\hat g_{a^k}=\big(f(x^L)-c_k(\tilde z^k)\big)\,x^k\sigma(-x^ka^k)+\partial_\zeta c_k(z^k)
    -\partial_\zeta c_k(\tilde z^k)\,\frac{\partial\tilde z^k}{\partial a^k},$$
    head: $\nabla_{\theta^{L+1}}f(x^L)$.  Unbiased for every $\tau>0$ (the temperature only changes
    the variance).  Draws ``L`` extra uniform tensors ($v^k$) after the main path.

    Cost per draw: the sampled pass plus, per layer $k$, two relaxed continuations through layers
    $k..L$ and their backward passes: $L+L(L+1)$ layer evaluations, $1+2L$ head evaluations, $2L$
    backward passes ($O(L^2)$).
    """

    name: ClassVar[str] = "rebar"
    unbiased: ClassVar[bool] = True
    noises: ClassVar[tuple[str, ...]] = ("logistic",)
    summary: ClassVar[str] = "REBAR: REINFORCE with a conditional Concrete control variate per layer (eta=1)"

    tau: float = option(0.5, gt=0.0, help="temperature of the Concrete control variate")

    def _estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        path = sample_path(problem, draws, generator)
        vs = [torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device) for a in path.a]
        Z = [noise_quantile(problem.noise, u) for u in path.u]
        f = problem.loss_of(path.x[-1])  # [D, B]
        law, grads = problem.noise_law, []
        for k in range(problem.depth):
            a, x = path.a[k], path.x[k]
            z_cond, dz_cond = conditional_logit(x, a, vs[k])
            c, dc = relaxed_continuation(problem, k, torch.stack([a - Z[k], z_cond]), Z, self.tau)
            delta = (f - c[1]).unsqueeze(-1) * law.score(x, a) + dc[0] - dc[1] * dz_cond
            grads.append(problem.param_grad(k, delta, path.inputs[k]))
        grads.append(head_grad(problem, problem.enc(path.x[-1])))
        return grads

    def cost(self, problem: Problem) -> Cost:
        L = problem.depth
        return Cost(layer_evals=L + L * (L + 1), head_evals=1 + 2 * L, backward_passes=2 * L)
