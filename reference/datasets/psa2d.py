r"""The PSA paper's synthetic two-class problem in 2-D (``docs/protocols.md#psa2020-data``).

:func:`psa_2d` draws the points: 100 per
class; class $+1$ has $x_1\sim U(-\pi/2,\pi/2)$, $x_2\sim U(0,1)$; class $-1$ has
$x_1\sim U(-\pi/2,\pi/2)$, $x_2\sim U(-1,1)$ accepted only if $x_2<\cos x_1$ (rejection sampling).
:func:`psa2d` makes the training :class:`~reference.datasets.Dataset`: its training split is exactly
``psa_2d(train, seed)`` (the 200 points of the gradient-accuracy protocol when ``train=200``);
validation and test are further independent draws.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..specs import guard_size
from .dataset import Dataset

__all__ = ["psa_2d", "psa2d"]


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


def psa2d(seed: int = 0, train: int = 200, val: int = 1000, test: int = 1000) -> Dataset:
    """The PSA paper's 2-D data: ``train`` points of :func:`psa_2d` (seed ``seed``), plus val and test draws."""
    guard_size(2 * (train + val + test), f"psa2d: {train} + {val} + {test} points")
    Xtr, ytr = psa_2d(train, seed)
    val_seed, test_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence([seed, 6_1]).spawn(2))
    Xva, yva = psa_2d(val, val_seed)
    Xte, yte = psa_2d(test, test_seed)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return Dataset(f"psa2d-seed{seed}", t(Xtr), t(ytr), t(Xva), t(yva), t(Xte), t(yte), loss="logistic", n_classes=2)
