r"""Streaming float64 moments: Welford updates per chunk and Chan's exact merge.

A :class:`Moments` holds $(n,\bar x,M_2)$ per coordinate.  ``update`` folds in a chunk of rows
(its own mean and $M_2$ computed in float64, then merged), and ``merge`` combines two accumulators
with Chan's formula $\delta=\bar x_b-\bar x_a$, $n=n_a+n_b$, $\bar x=\bar x_a+\delta n_b/n$,
$M_2=M_{2,a}+M_{2,b}+\delta^2n_an_b/n$, so chunks and workers combine exactly (up to rounding).  A coordinate whose rows are all equal
gets that value as its mean (not a rounded sum / k), so a deterministic estimator's variance is
exactly 0, not 1e-30.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Moments"]


@dataclass
class Moments:
    size: int
    n: int = 0
    mean: np.ndarray = field(default=None)  # type: ignore[assignment]
    m2: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.mean is None:
            self.mean = np.zeros(self.size)
        if self.m2 is None:
            self.m2 = np.zeros(self.size)

    def update(self, rows: np.ndarray) -> "Moments":
        """Fold in ``rows`` shaped ``[k, size]`` (or ``[k]`` when size is 1 and scalar)."""
        rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), self.size)
        k = rows.shape[0]
        if k == 0:
            return self
        with np.errstate(all="ignore"):  # an overflow leaves inf/NaN: callers check ``finite``
            mean = rows.mean(0)
            const = rows.min(0) == rows.max(0)  # a coordinate that never varies: its mean is that value, M2 is 0
            mean[const] = rows[0, const]
            m2 = ((rows - mean) ** 2).sum(0)  # exactly 0 where const
        return self.merge(Moments(self.size, k, mean, m2))

    def merge(self, other: "Moments") -> "Moments":
        """Chan's parallel combination (in place); returns self."""
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.mean, self.m2 = other.n, other.mean.copy(), other.m2.copy()
            return self
        n = self.n + other.n
        with np.errstate(all="ignore"):
            delta = other.mean - self.mean
            self.mean = self.mean + delta * (other.n / n)
            self.m2 = self.m2 + other.m2 + delta * delta * (self.n * other.n / n)
        self.n = n
        return self

    @property
    def finite(self) -> bool:
        """Whether the mean and M2 are still finite (values too large for float64 overflow them)."""
        return bool(np.isfinite(self.mean).all() and np.isfinite(self.m2).all())

    @property
    def var(self) -> np.ndarray:
        """Unbiased per-coordinate variance of one row."""
        return self.m2 / max(self.n - 1, 1)
