"""The one error type for bad input anywhere in sbn-bench.

Every package raises :class:`InputError` for input it cannot accept (unknown names, bad shapes,
NaN weights, oversize exact problems, corrupt stores).  The CLI turns it into one line on stderr
and exit code 2; library users catch it like any ``ValueError``.
"""

import os
import traceback

__all__ = ["EstimatorError", "InputError", "OutputError", "one_line", "raised_at"]


class InputError(ValueError):
    """Input that sbn-bench refuses: the message is one line that names the offending item."""


class EstimatorError(InputError):
    """An estimator's own code failed (it raised, or called ``sys.exit``): one line naming the estimator,
    the exception and where it was raised.  A sweep stores it as the task's failure; elsewhere it is one
    line and exit code 2, like any refusal."""


class OutputError(EstimatorError):
    """An estimator's output off its contract (not a list of one ``[draws, size]`` tensor per group in the
    problem's dtype and on its device): a fault of the estimator, not of the problem it was given."""


def one_line(exc: BaseException, limit: int = 500) -> str:
    """``str(exc)`` as one printable line of at most ``limit`` characters, whatever user code put in it:
    newlines joined, control characters (ANSI escapes) escaped, a ``__str__`` that raises survived."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a message that cannot be made is named as such
        text = f"<{type(exc).__name__} whose message cannot be printed>"
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def raised_at(exc: BaseException) -> str:
    """`` (at file.py:LINE)`` of the innermost frame ``exc`` was raised in, or ``""`` without a traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
