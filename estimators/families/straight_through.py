r"""Deep straight-through (ST) and its ad-hoc relatives (``docs/estimators/straight-through.md``).

Forward: the sampled binary network.  Backward: ordinary backpropagation in which every sign unit is
given a slope $\partial\,\mathrm{enc}(x)/\partial a$:
$$g^L=\frac{\partial f}{\partial\,\mathrm{enc}(x^L)},\qquad
\delta^k=\mathrm{slope}(a^k)\odot g^k,\qquad g^{k-1}=W^{k\top}\delta^k,\qquad
\hat g(\theta^k)=\frac1B\sum_b\delta^k_b\,\mathrm{inp}^{k\top}_b .$$

| estimator | slope $\partial\,\mathrm{enc}(x)/\partial a$ |
|---|---|
| ``st`` (deep ST) | $c\,F'(a)$, $c=2$ in ``pm1`` and $1$ in ``01`` — i.e. $\frac{d}{da}\mathbb E[\mathrm{enc}(x)\mid a]$ |
| ``st-identity`` | $1$ |
| ``st-tanh`` | $1-\tanh^2(a)$ |
| ``st-hardtanh`` | $\mathbb 1[\lvert a\rvert\le1]$ |

The ad-hoc slopes apply to whatever the next layer reads (the encoded state), as in common use;
so only deep ST is the same estimator in both encodings (``docs/model.md#encodings``,
``docs/estimators/straight-through.md#deep-st``).  All are biased (deep
ST is unbiased for the head and exact for one layer under a loss linear in the states) and all are
path-deterministic.  Cost per draw: one sampled pass and one backward pass.

References: Bengio, Léonard & Courville, arXiv:1308.3432; Shekhovtsov & Yanush, arXiv:2006.06880.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..base import Cost, Estimator
from ..model import Path, Problem, backprop
from ..registry import register

__all__ = ["StraightThrough", "DeepST", "IdentityST", "TanhST", "HardTanhST"]


@dataclass(frozen=True)
class StraightThrough(Estimator):
    """Shared machinery: sampled forward pass, backprop with :meth:`slope` (not registered itself)."""

    path_deterministic: ClassVar[bool] = True
    has_from_path: ClassVar[bool] = True

    def slope(self, problem: Problem, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cost(self, problem: Problem) -> Cost:
        return Cost(layer_evals=problem.depth, head_evals=1, backward_passes=1)

    def unbiased_groups(self, problem: Problem) -> tuple[str, ...]:
        """The head only: its gradient is pathwise at the sampled states."""
        return super().unbiased_groups(problem) if self.unbiased else ("head",)

    def from_path(self, problem: Problem, path: Path, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Per-draw group gradients ``[D, size]`` (layers, then head) of the given sampled path."""
        slopes = [self.slope(problem, a) for a in path.a]
        return backprop(problem, path.inputs, slopes, problem.enc(path.x[-1]))


@register
@dataclass(frozen=True)
class DeepST(StraightThrough):
    r"""Deep straight-through: backprop through each sampled unit with $\frac{d}{da}\mathbb E[\mathrm{enc}(x)\mid a]$.

    Slope $2F'(a)$ in ``pm1`` and $F'(a)$ in ``01`` (the sigmoid-adjusted ST) — the same estimator.
    It is PSA with both finite differences linearised (``docs/estimators/straight-through.md#deep-st``). 
    Biased already for the last
    hidden layer; unbiased for the head; exact for one layer when $f$ is linear in the states.
    Cost per draw: one sampled pass and one backward pass.
    """

    name: ClassVar[str] = "st"
    unbiased: ClassVar[bool] = False
    summary: ClassVar[str] = "deep straight-through, slope d E[x|a]/da (2F' in pm1, F' in 01)"

    def slope(self, problem, a):
        return problem.mean_slope * problem.noise_law.pdf(a)


@register
@dataclass(frozen=True)
class IdentityST(StraightThrough):
    r"""Identity straight-through: sampled forward, slope $\partial\,\mathrm{enc}(x)/\partial a=1$.

    Biased: 2x deep ST's slope at $a=0$ in ``pm1`` (4x in ``01``) and unboundedly wrong for large
    $|a|$; the errors compound over depth (``docs/estimators/straight-through.md#variants``).  Cost: one
    sampled pass and one backward.
    """

    name: ClassVar[str] = "st-identity"
    unbiased: ClassVar[bool] = False
    summary: ClassVar[str] = "identity straight-through, slope 1"

    def slope(self, problem, a):
        return torch.ones_like(a)


@register
@dataclass(frozen=True)
class TanhST(StraightThrough):
    r"""tanh straight-through: sampled forward, slope $1-\tanh^2(a)$.

    Biased: the derivative of $\mathbb E[x]$ for logistic noise of scale ½, 2x deep ST's slope at
    $a=0$ and too narrow (``docs/estimators/straight-through.md#variants``).  Cost: one sampled pass and one backward.
    """

    name: ClassVar[str] = "st-tanh"
    unbiased: ClassVar[bool] = False
    summary: ClassVar[str] = "tanh straight-through, slope 1 - tanh^2(a)"

    def slope(self, problem, a):
        return 1 - torch.tanh(a) ** 2


@register
@dataclass(frozen=True)
class HardTanhST(StraightThrough):
    r"""Hard-tanh ("clipped identity") straight-through: sampled forward, slope $\mathbb 1[|a|\le1]$.

    Equals deep ST for uniform noise on $[-1,1]$ in ``pm1`` (up to the measure-zero boundary
    $|a|=1$); with logistic sampling it is a mismatched heuristic — the PSA paper's "Hard ST"
    baseline.  Biased.  Cost: one sampled pass and one backward.
    """

    name: ClassVar[str] = "st-hardtanh"
    unbiased: ClassVar[bool] = False
    summary: ClassVar[str] = "hard-tanh straight-through, slope 1[|a| <= 1]"

    def slope(self, problem, a):
        return (a.abs() <= 1).to(a.dtype)
