"""Checks shared by every entry point (flags, TOML keys, spec options, problem files, stores): one line each.

Each returns the checked value or raises :class:`~estimators.errors.InputError` naming the input and
what it accepts, so bad input is refused before anything is computed or written.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tempfile

from .errors import InputError

__all__ = ["MAX_SEED", "cannot_create_in", "no_repeats", "MAX_DRAWS", "MAX_TEXT_BYTES", "seed", "positive_int", "positive_finite", "safe_name",
           "read_text_file", "comma_items", "threads"]

#: the largest configuration or baseline text file read (a TOML sweep, a JSON baseline)
MAX_TEXT_BYTES = 16 * 2**20

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


def positive_finite(value, what: str, maximum: float | None = None) -> float:
    """A finite number > 0 (and at most ``maximum`` where given), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a finite number > 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise InputError(f"{what} must be at most {maximum:g}, got {value!r}")
    return float(value)


def physical_memory_gib() -> float | None:
    """This machine's memory in GiB (``None`` where the OS does not tell)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(value, what: str = "--memory-budget (GiB)") -> float:
    """A memory budget in GiB: finite, > 0, and at most this machine's memory (a larger one lets the exact
    reference allocate until the kernel kills the process, with no message)."""
    value = positive_finite(value, what)
    total = physical_memory_gib()
    if total is not None and value > max(total, 4.0):  # the default (4 GiB) stands on any machine
        raise InputError(f"{what} {value:g} is more than this machine's memory ({total:.3g} GiB)")
    return value


def safe_name(value, what: str = "name") -> str:
    """A name that may become part of a file or folder name: letters, digits and ``._@=+,-``, no
    leading dot or separator, at most 200 characters (so ``../x`` or ``/etc`` never steer a path)."""
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise InputError(f"{what} {value!r} may hold ASCII letters, digits and ._@=+,- only (no path separators, "
                         f"no leading dot or '..', at most 200 characters)")
    return value


def threads(value, what: str = "--threads") -> int:
    """A torch thread count: a positive integer no larger than 8 x the CPUs (at least 64); more
    threads than that only exhausts the machine."""
    limit = max(64, 8 * (os.cpu_count() or 1))
    return positive_int(value, what, maximum=limit)


def read_text_file(path: str, what: str, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a small regular file: refuses a missing file, a directory, a FIFO or device (which
    could block or never end) and anything over ``limit`` bytes, before reading it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path!r} does not exist") from None
    except OSError as exc:
        raise InputError(f"{what} {path!r} cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {path!r} is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {path!r} is not a regular file (a pipe or device?)")
    if st.st_size > limit:
        raise InputError(f"{what} {path!r} has {st.st_size} bytes, over the limit of {limit}")
    with open(path, "rb") as fh:
        return fh.read(limit + 1)


def no_repeats(items, what: str, kind: str = ""):
    """``items`` unchanged, or :class:`InputError` naming the first one given twice (linear time)."""
    seen = set()
    for item in items:
        if item in seen:
            raise InputError(f"{what} names {kind + ' ' if kind else ''}{item!r} more than once")
        seen.add(item)
    return items


def cannot_create_in(folder: str | os.PathLike) -> str | None:
    """Why the OS refuses new entries in the existing ``folder`` (its error, in lower case), or ``None``.
    It creates and removes a probe folder: ``access()`` says yes to root everywhere, /proc and /sys too."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sbn-probe-", dir=folder))
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return None


def is_sqlite_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable file that starts with SQLite's header (a results store: no output of
    sbn-bench may replace one)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def comma_items(text: str, what: str, unique: bool = False) -> list[str]:
    """The items of a comma list, stripped; an empty list or an empty item (``a,,b``) is refused, and
    with ``unique`` an item given twice."""
    items = [t.strip() for t in str(text).split(",")]
    if not any(items):
        raise InputError(f"{what} is empty")
    if not all(items):
        raise InputError(f"{what} {text!r} has an empty item")
    return no_repeats(items, f"{what} {text!r}") if unique else items


#: the most digits a plain integer may have (Python refuses int() of over 4300; no count here needs 30)
MAX_INT_DIGITS = 30


def plain_int(text: str, what: str, signed: bool = True) -> int:
    """An integer written in plain ASCII decimal (``int()`` also reads ``1_0``, `` 3``, ``٣`` and ``²``-like
    digits of other scripts), of at most :data:`MAX_INT_DIGITS` digits; anything else is one :class:`InputError`."""
    text = str(text)
    if not re.fullmatch(r"[+-]?[0-9]+" if signed else r"[0-9]+", text):
        raise InputError(f"{what} {text[:40]!r} must be a plain integer (ASCII digits{', a sign' if signed else ''})")
    if len(text.lstrip("+-")) > MAX_INT_DIGITS:
        raise InputError(f"{what} {text[:12]}... has {len(text.lstrip('+-'))} digits; far beyond any limit")
    return int(text)


def int_list(text: str, what: str) -> tuple[int, ...]:
    """A comma list of plain integers (:func:`comma_items`, :func:`plain_int`)."""
    return tuple(plain_int(t, f"{what} item") for t in comma_items(text, what))

