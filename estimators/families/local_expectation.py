r"""Local expectation gradients for deep SBNs (``docs/estimators/score-function.md#local-expectation``).

Every unit $(k,i)$ is summed over its two states exactly (``docs/estimators/psa.md#derivation``, Step A), with
the other units
and layers sampled:
$$\hat g(\theta^k)=\sum_i\nabla_{\theta^k}p(x^k_i\mid x^{k-1})\,\big(\tilde f(x^k)-\tilde f(x^k_{\downarrow i})\big),
\qquad\nabla_{\theta^k}p(x^k_i\mid x^{k-1})=x^k_iF'(a^k_i)\,\nabla_{\theta^k}a^k_i,$$
where $\tilde f(s)$ is a loss sampled downstream of layer $k$ from the state $s$.  The unflipped
branch reuses the main path; each flipped branch samples layers $k{+}1..L$ afresh, or (``shared=True``)
with the main path's own downstream uniforms (common random numbers).  For the last layer the
flips are exact head evaluations.

References: Titsias & Lázaro-Gredilla, NeurIPS 2015; Tokui & Sato, ICML 2017.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..base import Cost, Estimator
from ..errors import InputError
from ..model import Path, Problem, head_grad, sample_in_chunks
from ..options import option
from ..registry import register
from .arm import continue_losses, require_generator

__all__ = ["LocalExpectation"]

#: Elements of the largest stacked-flips tensor ``[n_k, D, B, n_j]`` processed at once (float64: 64 MiB).
CHUNK_ELEMENTS = 2**23
#: Problems whose single draw needs more (``B * max(n)^2`` elements, float64: 512 MiB) are refused.
MAX_ELEMENTS_PER_DRAW = 2**26


@register
@dataclass(frozen=True)
class LocalExpectation(Estimator):
    r"""Local expectation: $\delta^k_i=x^k_iF'(a^k_i)\,(\tilde f(x^k)-\tilde f(x^k_{\downarrow i}))$ for every unit.

    $\tilde f(x^k)$ is the main path's loss; $\tilde f(x^k_{\downarrow i})$ continues from the state
    with unit $i$ negated, using fresh downstream noise (``shared=False``) or the main path's
    downstream uniforms (``shared=True``).  All $n_k$ flips of a layer are stacked as one extra
    leading dimension, so one batched downstream pass serves them all; draws are processed in chunks
    so that the stacked tensor stays below :data:`CHUNK_ELEMENTS` elements; a problem needing more
    than :data:`MAX_ELEMENTS_PER_DRAW` for one draw (very wide or convolutional layers) is refused
    with an :class:`InputError`.

    Unbiased either way: given $x^{\le k}$ each branch's loss has mean $G_k(\cdot)$ of its start state,
    and $\mathbb E_{x_i}[\partial p(x_i)(G(x)-G(x_{\downarrow i}))]=\sum_s\partial p(s)G(s)$ exactly.
    For one hidden layer it coincides with PSA and is path-deterministic in the sampled path.

    Cost per draw: main pass ($L$ layers, 1 head); one downstream pass per hidden unit of layers
    $1..L{-}1$ ($\sum_{k<L}n_k(L-k)$ layer evaluations, $\sum_{k<L}n_k$ heads) and $n_L$ extra head
    evaluations; weight-gradient products (1 backward pass).  Memory per chunk
    $\approx n_k\,D\,B\,\max_j n_j$ per layer.
    """

    name: ClassVar[str] = "local-expectation"
    unbiased: ClassVar[bool] = True
    paths_per_draw: ClassVar[int] = 1
    path_deterministic: ClassVar[bool] = False
    has_from_path: ClassVar[bool] = True
    summary: ClassVar[str] = "local expectation: exact sum over each unit, downstream resampled per flip; unbiased"

    shared: bool = option(False, help="the flipped branches reuse the main path's downstream uniforms")

    def from_path(self, problem: Problem, path: Path, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Per-draw group gradients given the main path; ``generator`` feeds fresh downstream passes."""
        if not self.shared:  # shared: the flipped branches reuse the path's own downstream uniforms
            require_generator(self, problem, generator)
        law = problem.noise_law
        f = problem.loss_of(path.x[-1])  # [D, B]
        grads = []
        for k in range(problem.depth):
            x, a = path.x[k], path.a[k]
            n = x.shape[-1]
            signs = 1 - 2 * torch.eye(n, dtype=x.dtype, device=x.device)  # row i negates unit i
            flipped = x.unsqueeze(0) * signs.view(n, 1, 1, n)  # [n, D, B, n]
            uniforms = path.u[k + 1:] if self.shared else None
            f_flip = continue_losses(problem, k + 1, flipped, generator, uniforms=uniforms)  # [n, D, B]
            diff = (f.unsqueeze(0) - f_flip).permute(1, 2, 0)  # [D, B, n]
            grads.append(problem.param_grad(k, x * law.pdf(a) * diff, path.inputs[k]))
        grads.append(head_grad(problem, problem.enc(path.x[-1])))
        return grads

    def _estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        w = problem.widths[1:]
        per_draw = problem.batch_size * max(w) * max(w)
        if per_draw > MAX_ELEMENTS_PER_DRAW:
            raise InputError(f"local-expectation stacks n_k flips per layer: {per_draw} elements per draw for widths "
                             f"{'-'.join(map(str, problem.widths))} and {problem.batch_size} points, over the limit "
                             f"{MAX_ELEMENTS_PER_DRAW}; use narrower layers or fewer points")
        chunk = max(1, CHUNK_ELEMENTS // per_draw)
        return sample_in_chunks(self.from_path, problem, draws, generator, chunk)

    def cost(self, problem: Problem) -> Cost:
        L, w = problem.depth, problem.widths
        layers = L + sum(w[k] * (L - k) for k in range(1, L))
        heads = 1 + sum(w[k] for k in range(1, L + 1))
        return Cost(layer_evals=layers, head_evals=heads, backward_passes=1)
