r"""Data generators.

:func:`psa_2d` is the PSA paper's synthetic two-class problem in 2-D (spec §6.1): 100 points per
class; class $+1$ has $x_1\sim U(-\pi/2,\pi/2)$, $x_2\sim U(0,1)$; class $-1$ has
$x_1\sim U(-\pi/2,\pi/2)$, $x_2\sim U(-1,1)$ accepted only if $x_2<\cos x_1$ (rejection sampling).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psa_2d"]


def psa_2d(points: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(X [points, 2] float64, y [points] in {-1,+1})``, half of each class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    n_pos = points // 2
    n_neg = points - n_pos
    pos = np.column_stack([rng.uniform(-math.pi / 2, math.pi / 2, n_pos), rng.uniform(0.0, 1.0, n_pos)])
    neg = np.empty((0, 2))
    while neg.shape[0] < n_neg:
        x1 = rng.uniform(-math.pi / 2, math.pi / 2, 2 * n_neg)
        x2 = rng.uniform(-1.0, 1.0, 2 * n_neg)
        keep = x2 < np.cos(x1)
        neg = np.vstack([neg, np.column_stack([x1[keep], x2[keep]])])
    X = np.vstack([pos, neg[:n_neg]])
    y = np.concatenate([np.ones(n_pos), -np.ones(n_neg)])
    return X, y
