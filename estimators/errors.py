"""The one error type for bad input anywhere in sbn-bench.

Every package raises :class:`InputError` for input it cannot accept (unknown names, bad shapes,
NaN weights, oversize exact problems, corrupt stores).  The CLI turns it into one line on stderr
and exit code 2; library users catch it like any ``ValueError``.
"""

__all__ = ["InputError", "OutputError"]


class InputError(ValueError):
    """Input that sbn-bench refuses: the message is one line that names the offending item."""


class OutputError(InputError):
    """An estimator's output off its contract (not a list of one floating-point ``[draws, size]`` tensor per
    group on the problem's device): a fault of the estimator, not of the problem it was given."""
