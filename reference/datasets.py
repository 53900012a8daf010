r"""Training data sets with train / validation / test splits; nothing is downloaded.

- :func:`psa2d` — the PSA paper's 2-D two-class data (spec §6.1, :func:`reference.data.psa_2d`).
  The training split is exactly ``psa_2d(train, seed)``, the 200 points of the gradient-accuracy
  protocol when ``train=200``; validation and test are further independent draws.
- :func:`shapes` — a generated image set: ten flip-symmetric glyphs (bars, plus, cross, square,
  block, ring, T, inverted T, double bar) on a ``size x size`` grey canvas, with random position,
  extent, stroke width and brightness plus Gaussian pixel noise, clipped to [0, 1].  Ten balanced
  classes; every split is a deterministic function of ``seed`` (independent streams per split, so
  resizing one split never changes another).  Generation is vectorised over images.
- :func:`reference.cifar.load_cifar10` (re-exported here) — CIFAR-10 from its python-pickle files.

A :class:`Dataset` holds flat inputs ``[N, n0]`` (possibly ``uint8``: :meth:`Dataset.features`
applies ``scale``) and labels in the loss's convention (``±1`` for the logistic loss, ``0..C-1``
for the softmax loss); image sets also record ``image_shape = (C, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import psa_2d

__all__ = ["Dataset", "psa2d", "shapes", "load_cifar10", "SHAPE_CLASSES"]

SHAPE_CLASSES = ("hbar", "vbar", "plus", "cross", "square", "block", "ring", "tee", "inverted-tee", "double-bar")


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


def _seeds(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def psa2d(seed: int = 0, train: int = 200, val: int = 1000, test: int = 1000) -> Dataset:
    """The PSA paper's 2-D data: ``train`` points as in spec §6.1 (seed ``seed``), plus val and test draws."""
    Xtr, ytr = psa_2d(train, seed)
    val_seed, test_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence([seed, 6_1]).spawn(2))
    Xva, yva = psa_2d(val, val_seed)
    Xte, yte = psa_2d(test, test_seed)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return Dataset(f"psa2d-seed{seed}", t(Xtr), t(ytr), t(Xva), t(yva), t(Xte), t(yte), loss="logistic", n_classes=2)


def _glyph_masks(u: np.ndarray, v: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Boolean masks ``[10, N, H, W]`` of every glyph at offsets ``u`` (right), ``v`` (down) from its centre."""
    au, av = np.abs(u), np.abs(v)
    m = np.maximum(au, av)
    r = np.hypot(u, v)
    inside = m <= s
    stem = (au <= t) & (av <= s)
    return np.stack([
        (av <= t) & (au <= s),                                          # hbar
        stem,                                                           # vbar
        ((au <= t) | (av <= t)) & inside,                               # plus
        ((np.abs(u - v) <= 1.4142 * t) | (np.abs(u + v) <= 1.4142 * t)) & inside,  # cross
        inside & (m >= s - 2 * t),                                      # square outline
        m <= 0.6 * s,                                                   # block
        np.abs(r - s) <= t,                                             # ring
        ((np.abs(v + 0.8 * s) <= t) & (au <= s)) | stem,                # tee (bar on top)
        ((np.abs(v - 0.8 * s) <= t) & (au <= s)) | stem,                # inverted tee
        ((np.abs(v - 0.5 * s) <= t) | (np.abs(v + 0.5 * s) <= t)) & (au <= s),  # double bar
    ])


def _draw_shapes(n: int, size: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.permutation(np.arange(n) % len(SHAPE_CLASSES))
    centre = np.arange(size) + 0.5 - size / 2
    yy, xx = centre[:, None], centre[None, :]
    p = lambda lo, hi: rng.uniform(lo, hi, n)[:, None, None]  # noqa: E731
    cx, cy = p(-size / 10, size / 10), p(-size / 10, size / 10)
    s, t, amp = p(0.25 * size, 0.38 * size), p(0.05 * size, 0.09 * size), p(0.6, 1.0)
    masks = _glyph_masks(xx - cx, yy - cy, s, t)
    img = masks[y, np.arange(n)] * amp + rng.normal(0.0, noise, (n, size, size))
    return np.clip(img, 0.0, 1.0).reshape(n, size * size).astype(np.float32), y


def shapes(size: int = 12, train: int = 5000, val: int = 1000, test: int = 1000, noise: float = 0.15,
           seed: int = 0) -> Dataset:
    """Ten-class generated glyph images (``1 x size x size``, pixels in [0, 1]); deterministic in ``seed``."""
    from estimators.errors import InputError

    if size < 6:
        raise InputError(f"shapes: size must be at least 6 pixels, got {size}")
    if min(train, val, test) < 1:
        raise InputError("shapes: train, val and test must each hold at least one image")
    splits = [_draw_shapes(n, size, noise, rng) for n, rng in zip((train, val, test), _seeds(seed, 3))]
    ts = [(torch.from_numpy(X), torch.from_numpy(y).long()) for X, y in splits]
    return Dataset(f"shapes{size}-seed{seed}", *ts[0], *ts[1], *ts[2], loss="softmax", n_classes=10,
                   image_shape=(1, size, size))


def load_cifar10(path, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """CIFAR-10 from the python-pickle files under ``path`` (see :func:`reference.cifar.load_cifar10`)."""
    from .cifar import load_cifar10 as _load

    return _load(path, val_fraction=val_fraction, seed=seed)
