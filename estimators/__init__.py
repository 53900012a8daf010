"""Stochastic binary networks and their gradient estimators.

Three layers, each in its own place:

- :mod:`estimators.model` — the SBN model and the :class:`Problem` container, the one definition of
  an SBN used by every package (it knows no estimator);
- :mod:`estimators.kernels` — PSA's flip-difference backward kernels (they know the model's noise
  laws only);
- :mod:`estimators.families` — one module per estimator family; each registers its estimators with
  :func:`estimators.registry.register`, and discovery imports every module there.

:mod:`estimators.base` states the contract and :mod:`estimators.registry` builds estimators from
``name:key=value`` specs.  This package imports none of ``reference``, ``bench`` or ``reports``.
"""

from .base import Cost, Estimator
from .errors import InputError
from .model import Path, Problem, backprop, head_grad, layer_grad, sample_path
from .registry import get, names, register

__all__ = [
    "Cost", "Estimator", "InputError", "Path", "Problem", "backprop", "get", "head_grad",
    "layer_grad", "names", "register", "sample_path",
]
