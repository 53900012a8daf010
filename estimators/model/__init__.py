"""The SBN model — the one definition every package uses.

- :mod:`estimators.model.problem`: :class:`ConvGeom` and :class:`Problem` (network, parameters,
  data, encoding, noise, loss; pre-activations, head, parameter groups);
- :mod:`estimators.model.paths`: sampled paths and per-draw gradient helpers;
- :mod:`estimators.model.noise` and :mod:`estimators.model.losses`: the pluggable noise laws and
  head losses;
- :mod:`estimators.model.per_draw`: per-draw gradients by parameter replication (for estimators
  whose forward pass is not a sampled pass).

The model knows no estimator.  See ``docs/model.md``.
"""

from .losses import LOSSES, Loss, get_loss
from .noise import NOISES, Noise, get_noise
from .paths import Path, backprop, head_grad, layer_grad, sample_in_chunks, sample_path
from .problem import ENCODINGS, ConvGeom, Problem

__all__ = [
    "ENCODINGS", "LOSSES", "NOISES", "ConvGeom", "Loss", "Noise", "Path", "Problem", "backprop", "get_loss",
    "get_noise", "head_grad", "layer_grad", "sample_in_chunks", "sample_path",
]
