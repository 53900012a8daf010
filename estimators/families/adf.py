r"""ADF: analytic (assumed-density) moment propagation through the SBN (``docs/estimators/relaxations.md#adf``).

Every unit is summarised by its mean $m$ and variance $v$, assuming independence; the real input
has $v=0$.  Per layer
$$\mu=Wm+b,\qquad s^2=(W\odot W)\,v,\qquad P=\mathbb E_{a\sim\mathcal N(\mu,s^2)}F(a),$$
and the layer's states are passed on with mean $2P-1$ and variance $4P(1-P)$ (0/1: $P$, $P(1-P)$).
The Gaussian step $E(\mu,s^2)=\mathbb E_{a\sim\mathcal N(\mu,s^2)}F(a)=P(Z-s\varepsilon<\mu)$:

- gaussian (probit) noise, exact: $\Phi\big(\mu/\sqrt{1+s^2}\big)$;
- logistic noise, variance matching ($Z\approx\mathcal N(0,\pi^2/3)$, $\sigma(x)\approx\Phi(x\sqrt3/\pi)$):
  $\sigma\big(\mu/\sqrt{1+3s^2/\pi^2}\big)$ (exact at $s=0$);
- uniform noise on $[-1,1]$, exact (derived): $F(a)=\tfrac12[(a+1)_+-(a-1)_+]$ and
  $\mathbb E(a-c)_+=h(\mu-c)$ with $h(d)=d\,\Phi(d/s)+s\,\varphi(d/s)$, so $E=\tfrac12[h(\mu+1)-h(\mu-1)]$.

$1-P$ is computed as $E(-\mu,s^2)$ (symmetric noise) so that $P(1-P)$ keeps its precision in the tails.
The head's logits $\eta=W^{L+1}m^L+b^{L+1}$ have variance $(W^{L+1}\odot W^{L+1})v^L$.

References: Shekhovtsov & Yanush, arXiv:2006.06880 and the PSA paper (arXiv:2006.03143), where
ADF is a CIFAR-10 baseline; Frey & Hinton 1999 and Gast & Roth, CVPR 2018 (moment propagation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from ..base import Cost, Estimator
from ..errors import InputError
from ..model import Problem
from ..model.per_draw import affine, layer_affine, layer_linear, linear, per_replica_grads, replicate, safe_sqrt, unpack
from ..options import option
from ..registry import register

__all__ = ["ADF", "HEADS", "expected_cdf", "unit_moments", "propagate", "adf_objective"]

HEADS = ("mean", "sample")
_LOGISTIC_VAR = math.pi**2 / 3.0


def _smoothed_uniform_cdf(mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    r"""$\tfrac12[h(\mu+1)-h(\mu-1)]$, $h(d)=d\Phi(d/s)+s\varphi(d/s)$; the plain CDF where $s<\epsilon$."""
    small = s < torch.finfo(s.dtype).eps
    s_ok = torch.where(small, torch.ones_like(s), s)  # keeps the unused branch (and its gradient) finite

    def h(d: torch.Tensor) -> torch.Tensor:
        t = d / s_ok
        return d * torch.special.ndtr(t) + s_ok * torch.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)

    smooth = 0.5 * (h(mu + 1.0) - h(mu - 1.0))
    return torch.where(small, ((mu + 1.0) * 0.5).clamp(0.0, 1.0), smooth)


def expected_cdf(noise: str, mu: torch.Tensor, s2: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""$(P,\,1-P)$ with $P=\mathbb E_{a\sim\mathcal N(\mu,s^2)}F(a)$ (``s2=None`` means $s=0$: $P=F(\mu)$)."""
    if noise not in ("logistic", "gaussian", "uniform"):
        raise InputError(f"unknown noise {noise!r}; choose one of logistic, gaussian, uniform")
    if s2 is None:
        if noise == "uniform":
            return ((mu + 1.0) * 0.5).clamp(0.0, 1.0), ((1.0 - mu) * 0.5).clamp(0.0, 1.0)
        s2 = torch.zeros_like(mu)
    if noise == "gaussian":
        t = mu * torch.rsqrt(1.0 + s2)
        return torch.special.ndtr(t), torch.special.ndtr(-t)
    if noise == "logistic":
        t = mu * torch.rsqrt(1.0 + s2 / _LOGISTIC_VAR)
        return torch.sigmoid(t), torch.sigmoid(-t)
    s = safe_sqrt(s2)
    return _smoothed_uniform_cdf(mu, s), _smoothed_uniform_cdf(-mu, s)


def unit_moments(P: torch.Tensor, Q: torch.Tensor, encoding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the encoded state of a unit that is on with probability ``P`` (``Q = 1 - P``)."""
    if encoding == "pm1":
        return P - Q, 4.0 * P * Q
    return P, P * Q


def propagate(problem: Problem, params: Sequence[tuple[torch.Tensor, torch.Tensor]],
              layer_eps: Sequence[torch.Tensor | None] | None = None,
              head_eps: torch.Tensor | None = None, record: list | None = None) -> torch.Tensor:
    r"""Per-point loss ``[R, B]`` of the moment-propagated network.

    ``params``: per group ``(W [R, *shape], b [R, n])`` (size-1 leading dims broadcast; convolutional
    layers are evaluated as grouped convolutions, :func:`~estimators.model.per_draw.layer_affine`).  With
    ``layer_eps=None`` every layer takes the ADF step; otherwise layer ``k`` samples
    $a=\mu+s\,\varepsilon_k$ and uses $P=F(a)$ (local reparameterisation; the first layer has $s=0$
    and ignores ``layer_eps[0]``).  ``head_eps`` (``[R, B, C]``) feeds $\eta=\bar\eta+\mathrm{sd}(\eta)\,
    \varepsilon$ to the loss; ``None`` feeds the mean logits $\bar\eta$.  If ``record`` is a list,
    each layer's ``(P, m, v)`` is appended to it.
    """
    law = problem.noise_law
    m, v = problem.X.unsqueeze(0), None
    for k in range(problem.depth):
        W, b = params[k]
        mu = layer_affine(problem, k, m, W, b)
        s2 = None if v is None else layer_linear(problem, k, v, W * W)
        if layer_eps is None:
            P, Q = expected_cdf(problem.noise, mu, s2)
        else:
            a = mu if s2 is None else mu + safe_sqrt(s2) * layer_eps[k]
            P, Q = law.cdf(a), law.cdf(-a)
        m, v = unit_moments(P, Q, problem.encoding)
        if record is not None:
            record.append((P, m, v))
    W, b = params[-1]
    eta = affine(m, W, b)
    if head_eps is not None:
        eta = eta + safe_sqrt(linear(v, W * W)) * head_eps
    return problem.loss_fn.value(eta, problem.y)


def adf_objective(problem: Problem, head_eps: torch.Tensor | None = None) -> torch.Tensor:
    """Batch-mean ADF loss of ``problem`` as given (differentiable in its tensors); ``[R]`` with ``head_eps``."""
    pairs = list(zip(problem.weights, problem.biases)) + [(problem.head_weight, problem.head_bias)]
    params = [(w.unsqueeze(0), b.unsqueeze(0)) for w, b in pairs]
    return propagate(problem, params, None, head_eps).mean(-1).squeeze(0)


def head_noise(problem: Problem, draws: int, generator: torch.Generator) -> torch.Tensor:
    """Standard normal ``[D, B, C]`` for the reparameterised head sample."""
    shape = (draws, problem.batch_size, problem.n_out)
    return torch.randn(shape, generator=generator, dtype=problem.dtype, device=problem.device)


@register
@dataclass(frozen=True)
class ADF(Estimator):
    r"""ADF moment propagation, differentiated end to end.

    Formula: $\hat g=\nabla_\theta f(\bar\eta)$ (``head="mean"``) or $\nabla_\theta f(\bar\eta+
    \mathrm{sd}(\eta)\odot\varepsilon)$, $\varepsilon\sim\mathcal N(0,I)$ per draw and point
    (``head="sample"``), where $\bar\eta,\mathrm{sd}(\eta)$ come from the moment recursion above.

    Biased: independence and Gaussian (central-limit) approximations, the logistic variance
    matching, and the head treatment (even one hidden layer is biased, since $\mathbb E f(\eta)\neq
    f(\mathbb E\eta)$).  Deterministic with the mean head (every draw is the same vector).

    Cost per draw: two passes (means and variances, $2L$ layer evaluations), 1 head evaluation and
    one backward pass; with the mean head they are done once and shared by all draws.
    """

    name: ClassVar[str] = "adf"
    unbiased: ClassVar[bool] = False
    summary: ClassVar[str] = "ADF: analytic mean/variance propagation; head on mean logits or one Gaussian sample"

    head: str = option("mean", choices=HEADS, help="mean: the head at the propagated mean; sample: one Gaussian sample")

    def _estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        copies = 1 if self.head == "mean" else draws
        eps = None if self.head == "mean" else head_noise(problem, draws, generator)
        with torch.enable_grad():
            leaves = replicate(problem, copies)
            grads = per_replica_grads(propagate(problem, unpack(problem, leaves), None, eps), leaves)
        return [g.repeat(draws // copies, 1) for g in grads]

    def cost(self, problem: Problem) -> Cost:
        return Cost(layer_evals=2 * problem.depth, head_evals=1, backward_passes=1)
