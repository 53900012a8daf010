"""Problem builders (named problems, data sets, checkpoints, problem files) and the exact reference.

Imports the estimators package only (never bench or reports).
"""

from .exact import Exact, exact, exact_loss
from .files import load_problem, save_problem
from .problems import build_problem, problem_names

__all__ = ["Exact", "build_problem", "exact", "exact_loss", "load_problem", "problem_names", "save_problem"]
