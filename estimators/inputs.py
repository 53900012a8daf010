"""Checks shared by every entry point (flags, TOML keys, spec options, problem files, stores): one line each.

Each returns the checked value or raises :class:`~estimators.errors.InputError` naming the input and
what it accepts, so bad input is refused before anything is computed or written.
"""

from __future__ import annotations

import math
import re

from .errors import InputError

__all__ = ["MAX_SEED", "MAX_DRAWS", "seed", "positive_int", "positive_finite", "safe_name"]

MAX_SEED = 2**63 - 1
#: draws one task may ask for without ``--allow-large`` (about a CPU-day for the cheapest estimator)
MAX_DRAWS = 10**9
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@=+,-]{0,199}$")


def seed(value, what: str = "seed") -> int:
    """An integer in ``[0, 2^63)`` (numpy's seed sequences take no negative entropy)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise InputError(f"{what} must be an integer in [0, 2^63), got {value!r}")
    return value


def positive_int(value, what: str, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{what} must be a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise InputError(f"{what} = {value} is over the limit of {maximum}")
    return value


def positive_finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def safe_name(value, what: str = "name") -> str:
    """A name that may become part of a file or folder name: letters, digits and ``._@=+,-``, no
    leading dot or separator, at most 200 characters (so ``../x`` or ``/etc`` never steer a path)."""
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise InputError(f"{what} {value!r} may hold letters, digits and ._@=+,- only (no path separators, "
                         f"no leading dot or '..', at most 200 characters)")
    return value
