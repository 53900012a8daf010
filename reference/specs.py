"""Spec options: one check from ``name:key=value,...`` options to a builder's keyword arguments.

Named problems (:mod:`reference.problems`) and training setups (``bench.training.setups``) are
both plain functions whose keyword defaults declare the options; :func:`build_from_spec` parses a
spec, refuses unknown names and options and values of the wrong kind (one :class:`InputError`
naming the option), and calls the builder.  :func:`dash_ints` and :func:`parse_widths` read the
``3-3`` and ``n0-n1-...-nL`` lists those options use.
"""

from __future__ import annotations

import inspect
from typing import Callable, Mapping

from estimators.errors import InputError
from estimators.inputs import plain_int
from estimators.options import Domain, check_value
from estimators.registry import parse_spec

__all__ = ["DOMAINS", "MAX_ELEMENTS", "build_from_spec", "checked_options", "dash_ints", "guard_size", "parse_widths"]

#: what numeric options accept, whichever builder declares them (checked after their type)
DOMAINS = {
    "points": Domain(ge=1), "classes": Domain(ge=2), "seed": Domain(ge=0, le=2**63 - 1), "scale": Domain(ge=0),
    "train": Domain(ge=1), "val": Domain(ge=1), "test": Domain(ge=1), "init_points": Domain(ge=1),
    "size": Domain(ge=1), "noise": Domain(ge=0),
}
#: stochastic layers a network may have (the deepest preset has 8; the PSA paper's CIFAR network 8)
MAX_LAYERS = 64
#: parameters plus inputs a spec may ask for (float64: 8 GB); larger specs are refused before allocating
MAX_ELEMENTS = 10**9


def checked_options(fn: Callable, options: dict[str, object], what: str, hidden: tuple[str, ...] = ()) -> dict:
    """``options`` checked against ``fn``'s keyword defaults: known names only, strings for string
    options; numeric ones by :func:`~estimators.options.check_value` (the estimators' check) with the
    default's type and the :data:`DOMAINS` entry of their name."""
    params = {k: v for k, v in inspect.signature(fn).parameters.items() if k not in hidden}
    out = dict(options)
    for key, value in options.items():
        if key not in params:
            raise InputError(f"{what} has no option {key!r} (options: {', '.join(params) or 'none'})")
        default = params[key].default
        if isinstance(default, str):
            out[key] = str(value)
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            out[key] = check_value(what, key, type(default), DOMAINS.get(key, Domain()), value)
    return out


def build_from_spec(spec: str, builders: Mapping[str, tuple[Callable, str]], kind: str, hint: str,
                    hidden: tuple[str, ...] = (), **extra):
    """Parse ``spec`` and call ``builders[name][0]`` with its checked options (plus ``extra``)."""
    if str(spec).strip().endswith(".npz") and ":" not in str(spec):  # not a plugin reference: a file not taken here
        raise InputError(f"{kind} {spec!r} is an .npz file, which this command does not read; choose one of "
                         f"{', '.join(builders)}{hint}")
    name, options = parse_spec(spec)
    if name not in builders:
        raise InputError(f"unknown {kind} {name!r}; choose one of {', '.join(builders)}{hint}")
    fn = builders[name][0]
    return fn(**checked_options(fn, options, f"{kind} {name!r}", hidden), **extra)


def guard_size(elements: int, what: str) -> None:
    """Refuse a problem of more than :data:`MAX_ELEMENTS` numbers before anything is allocated."""
    if elements > MAX_ELEMENTS:
        if elements < 10**300:
            size = f"{elements:.3g} numbers ({elements * 8 / 2**30:.3g} GiB in float64)"
        else:  # beyond float range: a 400-digit count overflowed the formatting
            size = f"about 1e{len(str(int(elements))) - 1} numbers"
        what = what if len(what) <= 200 else what[:200] + "..."
        raise InputError(f"{what} would hold {size}, over the limit of {MAX_ELEMENTS:.0e}; use a smaller network or "
                         f"fewer points")


def _dash_split(text, what: str, example: str, before: int = 0) -> tuple[int, ...]:
    """Plain decimal integers joined by ``-`` (ASCII digits only: ``1_0``, ``+3``, `` 3`` and ``٣`` are refused,
    as in every other number of a spec), one per layer after ``before`` leading ones; at most
    :data:`MAX_LAYERS` layers."""
    parts = str(text).split("-")
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise InputError(f"bad {what} {str(text)[:60]!r}; write plain integers joined by '-', e.g. {example}")
    if len(parts) - before > MAX_LAYERS:  # 5000 layers ran for minutes without a word
        raise InputError(f"{what} {str(text)[:40]}... give {len(parts) - before} layers; at most {MAX_LAYERS} are "
                         f"accepted")
    return tuple(plain_int(p, what, signed=False) for p in parts)  # 5000 digits: one line, not int()'s error


def dash_ints(text, what: str, n: int | None = None) -> tuple[int, ...]:
    """Non-negative integers joined by ``-`` (``"3-3"``), one per layer; with ``n``, one value is repeated
    ``n`` times and any other count than ``n`` is refused."""
    out = _dash_split(text, what, "3-3")
    if n is not None and len(out) == 1:
        out = out * n
    if n is not None and len(out) != n:
        raise InputError(f"{what} {text!r} needs {n} values, one per layer")
    return out


def parse_widths(widths: str | int) -> tuple[int, ...]:
    """Layer widths ``n0-n1-...-nL`` (input width first), at least one layer, all positive."""
    out = _dash_split(widths, "widths", "2-5-5-5", before=1)  # the input width, then one per layer
    if len(out) < 2 or min(out) < 1:
        raise InputError(f"bad widths {widths!r}; need an input width and at least one layer, all positive")
    guard_size(sum(a * b + b for a, b in zip(out, out[1:])), f"widths {widths}")
    return out
