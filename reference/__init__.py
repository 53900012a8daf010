"""Problem builders (presets, data generators, checkpoints, file loaders) and the exact reference."""

from .exact import Exact, exact, exact_loss
from .files import load_problem, save_problem
from .presets import build_problem, preset_names

__all__ = ["Exact", "build_problem", "exact", "exact_loss", "load_problem", "preset_names", "save_problem"]
