r"""Tempered straight-through: deep ST with the surrogate slope of a tempered unit.

Deep ST replaces each binary unit's derivative by the derivative of its mean,
$\frac{d}{da}\mathbb E[\mathrm{enc}(x)\mid a] = c\,F'(a)$ ($c=2$ for $\pm1$ states, 1 for 0/1).
This estimator uses the slope of the unit's mean at temperature $T$ instead,

$$\hat s(a) = \frac{c}{T}\,F'\!\Big(\frac aT\Big),$$

which is sharper than deep ST's for $T<1$ and flatter for $T>1$ ($T=1$ is deep ST).  It is
written against sbn-bench's public contract only (:class:`estimators.base.Estimator`,
:func:`estimators.options.option`, :func:`estimators.model.backprop`) and registered through the
``sbn_bench.estimators`` entry point of this package's ``pyproject.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from estimators.base import Cost, Estimator
from estimators.model import Path, Problem, backprop
from estimators.options import option

__all__ = ["TemperedST"]


@dataclass(frozen=True)
class TemperedST(Estimator):
    r"""Tempered straight-through: backprop through the sampled path with unit slopes $(c/T)\,F'(a/T)$.

    Biased (like deep ST, already for the last hidden layer: the slope replaces an exact finite
    difference); unbiased for the head, whose gradient is pathwise at the sampled states.  A function
    of the sampled path alone.  Cost per draw: one sampled pass ($L$ layer evaluations, one head
    evaluation) and one backward pass.
    """

    name: ClassVar[str] = "tempered-st"
    unbiased: ClassVar[bool] = False
    path_deterministic: ClassVar[bool] = True
    has_from_path: ClassVar[bool] = True
    summary: ClassVar[str] = "deep ST with the surrogate slope of a unit at temperature T (example plugin)"

    temperature: float = option(1.0, gt=0.0, help="T of the surrogate slope (1 = deep ST)")

    def from_path(self, problem: Problem, path: Path, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        T = self.temperature
        law = problem.noise_law
        slopes = [problem.mean_slope * law.pdf(a / T) / T for a in path.a]
        return backprop(problem, path.inputs, slopes, problem.enc(path.x[-1]))

    def unbiased_groups(self, problem: Problem) -> tuple[str, ...]:
        """The head: its gradient is pathwise at the sampled states (``validate`` tests this claim)."""
        return super().unbiased_groups(problem) if self.unbiased else ("head",)

    def cost(self, problem: Problem) -> Cost:
        return Cost(layer_evals=problem.depth, head_evals=1, backward_passes=1)
