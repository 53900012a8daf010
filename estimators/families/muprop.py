r"""MuProp — REINFORCE with a first-order Taylor control variate of a mean-field network
(``docs/estimators/score-function.md#muprop``).

For layer $k$ let $\bar x^k$ be an expansion point and $\bar f_k(\cdot)$ the **mean-field
continuation**: the deterministic network that maps a (relaxed, $\pm1$-scale) state $m^k$ of layer
$k$ to $m^{j}=2F(a^{j}(m^{j-1}))-1$ for $j=k{+}1..L$ and then to the loss $f(m^L)$.  The control
variate is its first-order Taylor expansion in $x^k$,
$$h_k(x^k)=\bar f_k(\bar x^k)+J_k^\top(x^k-\bar x^k),\qquad J_k=\nabla\bar f_k(\bar x^k),$$
and the estimate for $\theta^k$ is
$$\hat g(\theta^k)=\big(f(x^L)-h_k(x^k)\big)\nabla_{\theta^k}\log p(x^k\mid x^{k-1})
+\sum_iJ_{k,i}\,2F'(a^k_i)\,\nabla_{\theta^k}a^k_i,$$
with the pathwise head gradient $\nabla_{\theta^{L+1}}f(x^L)$.

**Exact unbiasedness (proof).**  $\bar x^k$ and $J_k$ depend only on the data, the parameters and
the upstream states $x^{<k}$, and are held fixed (stop-gradient).  Given $x^{<k}$, the units of
$x^k$ are independent with $\mathbb E[x^k_i\mid x^{k-1}]=2F(a^k_i)-1$, so
$\mathbb E[h_k(x^k)\nabla_{\theta^k}\log p(x^k\mid x^{k-1})\mid x^{<k}]
=\nabla_{\theta^k}\mathbb E[h_k(x^k)\mid x^{k-1}]=\sum_iJ_{k,i}\,2F'(a^k_i)\nabla_{\theta^k}a^k_i$
exactly, because $h_k$ is affine in $x^k$.  The analytic term therefore cancels the control
variate's mean, and what remains is plain REINFORCE, which is unbiased
(``docs/estimators/score-function.md#reinforce``).  No
approximation is involved; the Taylor expansion only affects the variance.

Expansion points (``point=``):

- ``conditional`` (default): $\bar x^k=\mathbb E[x^k\mid x^{k-1}]=2F(a^k)-1$ from the *sampled*
  $x^{k-1}$, with a mean-field continuation per layer.  Cost per draw: $L+L(L-1)/2$ layer and
  $L+1$ head evaluations; backward passes $1+(L-1)/2$ (the weight-gradient products plus a
  mean-field backward over the $L-k$ layers above each layer $k$, counted as $(L-k)/L$ each).
- ``input``: one mean-field pass from the input ($\bar x^1=2F(a^1(x^0))-1$, ...), as in Gu et al.;
  $\bar x^k$ and $J_k$ are then data-only.  Cost per draw: $2L$ layer and 2 head evaluations,
  2 backward passes.

References: Gu, Levine, Sutskever & Mnih, ICLR 2016 (arXiv:1511.05176).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..base import Cost, Estimator
from ..model import Path, Problem, head_grad
from ..options import option
from ..registry import register

__all__ = ["MuProp", "mean_field"]

POINTS = ("conditional", "input")


def mean_field(problem: Problem, start: int,
               m: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    r"""Mean-field continuation from the $\pm1$-scale state ``m`` of layer ``start`` (0 = the input).

    Returns the loss $\bar f$ ``[..., B]``, the means ``[m^start, ..., m^L]`` and the gradients
    $\partial\bar f/\partial m^j$ for ``j = max(start, 1)..L`` (``[..., B, n_j]`` each; at the input
    ``m`` is the raw $x^0$, which is not encoded and gets no gradient).  Manual backward pass.
    """
    law = problem.noise_law
    enc_slope = problem.flip_scale / 2  # d enc(x) / d x: 1 (pm1) or 1/2 (01)
    means, slopes = [m], []
    for j in range(start, problem.depth):
        inp = m if j == 0 else problem.enc(m)
        a = problem.preact(j, inp)
        slopes.append(2 * law.pdf(a))
        m = 2 * law.cdf(a) - 1
        means.append(m)
    eta = problem.head(problem.enc(m))
    f = problem.loss_fn.value(eta, problem.y)
    g = (problem.loss_fn.grad(eta, problem.y) @ problem.head_weight) * enc_slope
    grads = [g]
    for j in range(problem.depth - 1, max(start, 1) - 1, -1):
        g = problem.input_grad(j, g * slopes[j - start]) * enc_slope
        grads.append(g)
    grads.reverse()
    return f, means, grads


@register
@dataclass(frozen=True)
class MuProp(Estimator):
    r"""MuProp: $(f-h_k(x^k))\nabla\log p(x^k\mid x^{k-1})+J_k^\top\nabla\mathbb E[x^k\mid x^{k-1}]$ per layer.

    $h_k$ is the first-order Taylor expansion, in $x^k$ around $\bar x^k$, of the mean-field
    continuation from layer $k$ (module docstring).  ``point="conditional"`` expands around
    $\mathbb E[x^k\mid x^{k-1}]$ of the sampled upstream state; ``point="input"`` around the
    mean-field network run from the input.  Exactly unbiased for either choice (proof in the module
    docstring): $h_k$ is affine in $x^k$ and independent of $x^{\ge k}$, and its score term's mean is
    added back analytically.  Cost per draw: see the module docstring ($O(L^2)$ layer evaluations
    for ``conditional``, $O(L)$ for ``input``).
    """

    name: ClassVar[str] = "muprop"
    unbiased: ClassVar[bool] = True
    paths_per_draw: ClassVar[int] = 1
    path_deterministic: ClassVar[bool] = True
    has_from_path: ClassVar[bool] = True
    summary: ClassVar[str] = "REINFORCE with a mean-field first-order Taylor control variate (MuProp); unbiased"

    point: str = option("conditional", choices=POINTS, help="where the mean-field control variate is expanded")

    def from_path(self, problem: Problem, path: Path, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Per-draw group gradients ``[D, size]`` from a given path (deterministic in the path)."""
        law = problem.noise_law
        f = problem.loss_of(path.x[-1])
        if self.point == "input":
            f_in, means, jacs = mean_field(problem, 0, problem.X)
        grads = []
        for k in range(problem.depth):
            x, a = path.x[k], path.a[k]
            if self.point == "input":
                f_bar, x_bar, J = f_in, means[k + 1], jacs[k]
            else:
                x_bar = 2 * law.cdf(a) - 1
                f_bar, _, jk = mean_field(problem, k + 1, x_bar)
                J = jk[0]
            h = f_bar + ((x - x_bar) * J).sum(-1)
            delta = (f - h).unsqueeze(-1) * law.score(x, a) + J * 2 * law.pdf(a)
            grads.append(problem.param_grad(k, delta, path.inputs[k]))
        grads.append(head_grad(problem, problem.enc(path.x[-1])))
        return grads

    def cost(self, problem: Problem) -> Cost:
        L = problem.depth
        if self.point == "input":
            return Cost(layer_evals=2 * L, head_evals=2, backward_passes=2)
        return Cost(layer_evals=L + L * (L - 1) / 2, head_evals=L + 1, backward_passes=1 + (L - 1) / 2)
