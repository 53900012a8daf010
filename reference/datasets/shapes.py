r"""A generated image set: ten flip-symmetric glyphs on a grey canvas; nothing is downloaded.

Bars, plus, cross, square, block, ring, T, inverted T and double bar on a ``size x size`` canvas,
with random position, extent, stroke width and brightness plus Gaussian pixel noise, clipped to
[0, 1].  Ten balanced classes; every split is a deterministic function of ``seed`` (independent
streams per split, so resizing one split never changes another).  Generation is vectorised over
images.
"""

from __future__ import annotations

import numpy as np
import torch

from estimators.errors import InputError

from ..specs import guard_size
from .dataset import Dataset, split_rngs

__all__ = ["SHAPE_CLASSES", "shapes"]

SHAPE_CLASSES = ("hbar", "vbar", "plus", "cross", "square", "block", "ring", "tee", "inverted-tee", "double-bar")


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
    if size < 6:
        raise InputError(f"shapes: size must be at least 6 pixels, got {size}")
    if min(train, val, test) < 1:
        raise InputError("shapes: train, val and test must each hold at least one image")
    guard_size((train + val + test) * size * size, f"shapes: {train} + {val} + {test} images of {size}x{size}")
    splits = [_draw_shapes(n, size, noise, rng) for n, rng in zip((train, val, test), split_rngs(seed, 3))]
    ts = [(torch.from_numpy(X), torch.from_numpy(y).long()) for X, y in splits]
    return Dataset(f"shapes{size}-seed{seed}", *ts[0], *ts[1], *ts[2], loss="softmax", n_classes=10,
                   image_shape=(1, size, size))
