r"""Learning-rate search as in the PSA paper (``docs/protocols.md#cifar``): bounded Brent minimisation over
$\log_{10}\mathrm{lr}$.

``scipy.optimize.minimize_scalar(method="bounded")`` (golden section with parabolic steps) minimises
$h(t)=\text{objective}(10^t)$ over $t\in[\text{lo},\text{hi}]$ (default $[-6,0]$).  Each evaluation
is one *trial*: a short training run from the same initial network with the same random streams,
scored by its running training loss.  At most ``trials`` trials run (a hard cap, whatever scipy
asks for), a trial whose loss is not finite scores ``PENALTY``, and the answer is the best trial
actually run — so the returned rate is always inside the bounds and one of the trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from scipy.optimize import minimize_scalar

from estimators.errors import InputError

__all__ = ["search_lr", "LRSearch", "PENALTY"]

PENALTY = 1e12


@dataclass
class LRSearch:
    """The chosen rate and every trial ``(log10 lr, objective)`` in the order run."""

    lr: float
    trials: list[tuple[float, float]]

    @property
    def log10_lr(self) -> float:
        return math.log10(self.lr)


class _Done(Exception):
    pass


def search_lr(objective: Callable[[float], float], trials: int = 10, bounds: tuple[float, float] = (-6.0, 0.0),
              xatol: float = 0.05) -> LRSearch:
    """Minimise ``objective(lr)`` over ``log10 lr`` in ``bounds`` with at most ``trials`` evaluations."""
    lo, hi = map(float, bounds)
    if not lo < hi:
        raise InputError(f"learning-rate search bounds must satisfy lo < hi, got {bounds}")
    if trials < 1:
        raise InputError(f"the learning-rate search needs at least one trial, got {trials}")
    seen: list[tuple[float, float]] = []

    def h(t: float) -> float:
        t = min(max(float(t), lo), hi)
        for done_t, value in seen:  # scipy never repeats a point, but be safe: no duplicate trials
            if done_t == t:
                return value
        if len(seen) >= trials:
            raise _Done
        value = float(objective(10.0 ** t))
        value = value if math.isfinite(value) else PENALTY
        seen.append((t, value))
        return value

    try:
        minimize_scalar(h, bounds=(lo, hi), method="bounded", options={"maxiter": trials, "xatol": xatol})
    except _Done:
        pass
    best_t = min(seen, key=lambda tv: tv[1])[0]
    return LRSearch(lr=10.0 ** best_t, trials=seen)
