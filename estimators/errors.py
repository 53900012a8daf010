"""The one error type for bad input anywhere in sbn-bench.

Every package raises :class:`InputError` for input it cannot accept (unknown names, bad shapes,
NaN weights, oversize exact problems, corrupt stores).  The CLI turns it into one line on stderr
and exit code 2; library users catch it like any ``ValueError``.
"""

__all__ = ["InputError"]


class InputError(ValueError):
    """Input that sbn-bench refuses: the message is one line that names the offending item."""
