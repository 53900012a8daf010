"""Stochastic binary networks and their gradient estimators.

The model (:mod:`estimators.model`) is the one definition of an SBN used by every package; each
estimator family lives in a module of its own and registers itself with
:func:`estimators.registry.register`.  This package imports none of ``reference``, ``bench`` or
``reports``.
"""

from .base import Cost, Estimator
from .errors import InputError
from .model import Path, Problem, backprop, head_grad, layer_grad, sample_path
from .registry import get, names, register

__all__ = [
    "Cost", "Estimator", "InputError", "Path", "Problem", "backprop", "get", "head_grad",
    "layer_grad", "names", "register", "sample_path",
]
