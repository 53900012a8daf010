"""The :class:`Dataset` container: flat inputs and labels of a train / validation / test split.

A :class:`Dataset` holds flat inputs ``[N, n0]`` (possibly ``uint8``: :meth:`Dataset.features`
applies ``scale``) and labels in the loss's convention (``±1`` for the logistic loss, ``0..C-1``
for the softmax loss); image sets also record ``image_shape = (C, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Dataset", "split_rngs"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs and labels of the three splits, the loss they go with, and the image geometry."""

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    loss: str  # "logistic" (labels ±1) or "softmax" (labels 0..C-1)
    n_classes: int
    image_shape: tuple[int, int, int] | None = None
    scale: float = 1.0  # features = X * scale (1/255 for uint8 images)

    @property
    def n_inputs(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_outputs(self) -> int:
        """Head outputs: 1 for the logistic loss, the class count for softmax."""
        return 1 if self.loss == "logistic" else self.n_classes

    def features(self, X: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Real network inputs of stored rows ``X`` (any dtype) as ``dtype``."""
        out = X.to(dtype)
        return out * self.scale if self.scale != 1.0 else out

    def to(self, device) -> "Dataset":
        move = {k: getattr(self, k).to(device) for k in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")}
        return Dataset(**{**self.__dict__, **move})


def split_rngs(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators spawned from ``seed`` (one per split)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]
