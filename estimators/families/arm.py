r"""ARM and DisARM — the antithetic score-function family for deep SBNs.

Both work layer by layer on the uniforms $u\sim U(0,1)^{n_k}$ that sampled the main path's $x^k$,
with logits $\phi=\sigma^{-1}(F(a^k))$ ($\phi=a^k$ for logistic noise) and the antithetic pair of
states of one $u$: $b^{(1)}=\mathbb 1[u>\sigma(-\phi)]$ and $b^{(2)}=\mathbb 1[u<\sigma(\phi)]$ (the
main path's own state).  $\tilde f(b)$ is the loss after sampling layers $k{+}1..L$ afresh given
$x^k=b$ (:func:`continue_losses`); both continuations run in one batched pass.

- ARM: $\hat g_{\phi}=\big(\tilde f(b^{(1)})-\tilde f(b^{(2)})\big)\,(u-\tfrac12)$;
- DisARM: $\hat g_{\phi_i}=\tfrac14\big(\tilde f(b^{(2)})-\tilde f(b^{(1)})\big)(b^{(2)}_i-b^{(1)}_i)\,
  \sigma(|\phi_i|)$ (ARM averaged over $u\leftrightarrow1-u$ and integrated over $u$ given the pair);

and $\hat g_{a}=\hat g_\phi\,d\phi/da$ with $d\phi/da=F'(a)/(F(a)F(-a))$, computed stably as
``score(+1, a) - score(-1, a)`` (1 for logistic noise).  Derivations, and the cell integration that
verifies DisARM's single-unit expectation: ``docs/estimators/score-function.md#arm`` and
``docs/estimators/score-function.md#disarm``.

References: Yin & Zhou, ICLR 2019 (arXiv:1807.11143); Dong, Mnih & Tucker, NeurIPS 2020
(arXiv:2006.10680).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from ..base import Cost, Estimator
from ..errors import InputError
from ..model import Path, Problem, head_grad
from ..options import option
from ..registry import register

__all__ = ["Arm", "DisArm", "continue_losses", "antithetic_losses", "dphi_da"]


def require_generator(estimator: Estimator, problem: Problem, generator: torch.Generator | None) -> None:
    """Downstream resampling draws from the call's generator: refuse ``None`` (no global stream)."""
    if generator is None and problem.depth > 1:
        raise InputError(f"estimator {estimator.spec} resamples downstream layers: from_path needs the generator")


def continue_losses(problem: Problem, start: int, x_start: torch.Tensor, generator: torch.Generator,
                    shared: bool = False, uniforms: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    r"""Per-point losses ``[R, D, B]`` after sampling layers ``start+1..L`` from given layer-``start`` states.

    ``x_start`` is ``[R, D, B, n_start]`` ($\pm1$): ``R`` alternative states of layer ``start``
    (1-based) per draw and point.  Downstream uniforms are fresh and independent per branch, or one
    set per draw shared by the ``R`` branches (``shared=True``), or the given ``uniforms`` (list of
    ``[D, B, n_j]`` for layers ``start+1..L``, shared by all branches).  With ``start == L`` the
    losses are head evaluations.  Cost: ``R * (L - start)`` layer and ``R`` head evaluations.
    """
    law = problem.noise_law
    x = x_start
    for i, j in enumerate(range(start, problem.depth)):
        a = problem.preact(j, problem.enc(x))
        if uniforms is not None:
            u = uniforms[i]
        else:
            shape = a.shape[1:] if shared else a.shape
            u = torch.rand(shape, generator=generator, dtype=a.dtype, device=a.device)
        x = torch.where(u < law.cdf(a), 1.0, -1.0).to(a.dtype)
    return problem.loss_of(x)


def dphi_da(problem: Problem, a: torch.Tensor) -> torch.Tensor:
    r"""$d\phi/da$ for $\phi=\operatorname{logit}F(a)$: $F'(a)/(F(a)F(-a))$, computed from the stable score."""
    one = torch.ones_like(a)
    law = problem.noise_law
    return law.score(one, a) - law.score(-one, a)


def antithetic_losses(problem: Problem, path: Path, k: int, generator: torch.Generator,
                      shared: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Layer index ``k`` (0-based): ``b1`` ($+1$ iff $u>F(-a)$), $\tilde f(b^{(1)})$ and $\tilde f(b^{(2)})$.

    $b^{(2)}$ is the main path's own state ($+1$ iff $u<F(a)$).  Both continuations run in one
    batched pass over ``[2, D, B, ...]`` tensors.
    """
    b2 = path.x[k]
    b1 = torch.where(path.u[k] > problem.noise_law.cdf(-path.a[k]), 1.0, -1.0).to(b2.dtype)
    f = continue_losses(problem, k + 1, torch.stack([b1, b2]), generator, shared=shared)
    return b1, f[0], f[1]


@dataclass(frozen=True)
class _Antithetic(Estimator):
    r"""Shared frame of ARM and DisARM: the layer loop over the main path, the pathwise head, the cost.

    Subclasses give :meth:`_unit_grad`, the per-unit estimate of $\partial f/\partial a^k$ from the
    antithetic pair of layer ``k``.  Cost per draw: main pass $L$ layers + 1 head; per layer $k$ two
    downstream passes of $L-k$ layers and 2 heads: $L^2$ layer evaluations, $2L+1$ head
    evaluations, weight-gradient outer products (1 backward pass).
    """

    unbiased: ClassVar[bool] = True
    paths_per_draw: ClassVar[int] = 1
    path_deterministic: ClassVar[bool] = False
    has_from_path: ClassVar[bool] = True

    shared: bool = option(False, help="both branches share the downstream uniforms")

    def _unit_grad(self, problem: Problem, path: Path, k: int, b1: torch.Tensor, f1: torch.Tensor,
                   f2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_path(self, problem: Problem, path: Path, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Per-draw group gradients given the main path (its ``u`` drive the estimator); ``generator``
        feeds the downstream continuations (required unless the network has one layer)."""
        require_generator(self, problem, generator)
        grads = []
        for k in range(problem.depth):
            b1, f1, f2 = antithetic_losses(problem, path, k, generator, self.shared)
            g_a = self._unit_grad(problem, path, k, b1, f1, f2)
            grads.append(problem.param_grad(k, g_a, path.inputs[k]))
        grads.append(head_grad(problem, problem.enc(path.x[-1])))
        return grads

    def cost(self, problem: Problem) -> Cost:
        L = problem.depth
        return Cost(layer_evals=L * L, head_evals=2 * L + 1, backward_passes=1)


@register
@dataclass(frozen=True)
class Arm(_Antithetic):
    r"""ARM: $\hat g_{a^k}=\big(\tilde f(b^{(1)})-\tilde f(b^{(2)})\big)(u-\tfrac12)\,\frac{d\phi}{da^k}$ per layer.

    $b^{(1)}=\mathbb 1[u>\sigma(-\phi)]$ and $b^{(2)}=\mathbb 1[u<\sigma(\phi)]$ share one $u$;
    $\tilde f(b)$ samples the layers above $k$ afresh (``shared=True``: both branches use the same
    downstream uniforms, which is equally unbiased and usually lower variance).  The main path is
    the ordinary sampled path, i.e. it continues with $b^{(2)}$ (equivalently $b^{(1)}$ under
    $u\mapsto1-u$); it supplies the upstream states $x^{k-1}$ of every layer.  The head gradient is
    pathwise at the main path's $x^L$.

    Unbiased: for one unit, $\mathbb E_u[(f(b^{(1)})-f(b^{(2)}))(u-\frac12)]=\sigma'(\phi)(f(1)-f(0))$
    (the cells $u<\sigma(-\phi)$ and $u>\sigma(\phi)$ each contribute $\pm\frac12\sigma'(\phi)$), and
    $\sigma'(\phi)\,d\phi/da=F'(a)$; the downstream noise is independent of $u$ given $b$.

    Cost per draw: main pass $L$ layers + 1 head; per layer $k$ two downstream passes of $L-k$
    layers and 2 heads: $L^2$ layer evaluations, $2L+1$ head evaluations, weight-gradient outer
    products (1 backward pass).
    """

    name: ClassVar[str] = "arm"
    summary: ClassVar[str] = "Augment-REINFORCE-Merge, layer-wise with downstream resampling; unbiased, O(L^2)"

    def _unit_grad(self, problem: Problem, path: Path, k: int, b1: torch.Tensor, f1: torch.Tensor,
                   f2: torch.Tensor) -> torch.Tensor:
        return (f1 - f2).unsqueeze(-1) * (path.u[k] - 0.5) * dphi_da(problem, path.a[k])


@register
@dataclass(frozen=True)
class DisArm(_Antithetic):
    r"""DisARM: $\hat g_{a_i}=\tfrac14(\tilde f(b)-\tilde f(\tilde b))(b_i-\tilde b_i)\max(F(a_i),F(-a_i))\,d\phi/da_i$.

    $b$ and $\tilde b=\mathbb 1[1-u<\sigma(\phi)]$ are the antithetic pair of one $u$ (the same pair
    of states ARM uses); $\tilde f$ resamples the layers above $k$ (fresh, or with the downstream
    uniforms shared by both branches when ``shared=True``).  Head gradient pathwise at the main path.

    Unbiased: it is ARM averaged over $u\leftrightarrow1-u$ and integrated over $u$ given
    $(b,\tilde b)$ (Dong et al.); the single-unit expectation is $\sigma'(\phi)(f(1)-f(0))$
    (``docs/estimators/score-function.md#disarm``).  Lower variance than ARM at the same cost.

    Cost per draw: as ARM — $L^2$ layer evaluations, $2L+1$ head evaluations, 1 backward pass.
    """

    name: ClassVar[str] = "disarm"
    summary: ClassVar[str] = "DisARM antithetic ARM, layer-wise with downstream resampling; unbiased, O(L^2)"

    def _unit_grad(self, problem: Problem, path: Path, k: int, b1: torch.Tensor, f1: torch.Tensor,
                   f2: torch.Tensor) -> torch.Tensor:
        # b1 is the antithetic state b~ and f1 = f~(b~); f2 = f~(b) at the main path's own state b
        a, b = path.a[k], path.x[k]
        law = problem.noise_law
        weight = torch.maximum(law.cdf(a), law.cdf(-a)) * dphi_da(problem, a)
        return 0.25 * (f2 - f1).unsqueeze(-1) * (b - b1) * weight
