"""Data sets with train / validation / test splits, generated or read offline (nothing is downloaded).

- :func:`psa2d` (:mod:`reference.datasets.psa2d`) — the PSA paper's 2-D two-class data;
  :func:`psa_2d` draws its points;
- :func:`shapes` (:mod:`reference.datasets.shapes`) — generated ten-class glyph images;
- :func:`load_cifar10` (:mod:`reference.datasets.cifar10`) — CIFAR-10 from its python-pickle files.

Each returns a :class:`Dataset` (:mod:`reference.datasets.dataset`).
"""

from .cifar10 import load_cifar10
from .dataset import Dataset
from .psa2d import psa2d, psa_2d
from .shapes import SHAPE_CLASSES, shapes

__all__ = ["SHAPE_CLASSES", "Dataset", "load_cifar10", "psa2d", "psa_2d", "shapes"]
