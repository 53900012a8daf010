"""Estimator options declared once: a type (the field's annotation) and a domain (choices, a range).

An estimator's options are the fields of its frozen dataclass.  Declaring a field with
:func:`option` attaches its domain::

    tau: float = option(1.0, gt=0, help="temperature of the relaxation")
    head: str = option("plain", choices=("plain", "flip-mixed"))

and :meth:`estimators.base.Estimator.__post_init__` checks every field against its type and domain
when the estimator is built (from a spec string, from Python, or by a plugin), raising one
:class:`~estimators.errors.InputError` line that names the option and what it accepts.  Nothing else
validates options by hand.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .errors import InputError

__all__ = ["Domain", "option", "domain_of", "check_field", "check_value", "check_relevant", "describe"]

_KEY = "sbn_bench_domain"
_KINDS = {"float": float, "int": int, "bool": bool, "str": str}


@dataclass(frozen=True)
class Domain:
    """What an option accepts besides its type: ``choices``, or bounds (strict ``gt``/``lt``, closed
    ``ge``/``le``); numbers must also be finite."""

    choices: tuple | None = None
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    help: str = ""
    #: ``((other option, values it may take), ...)``: this option has an effect only then, so a value other
    #: than its default is refused otherwise (``decay`` of REINFORCE's EMA baseline with ``baseline=none``)
    only_with: tuple = ()

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        parts = [f"{op} {v if isinstance(v, int) else format(v, 'g')}" for op, v in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                 if v is not None]
        return " and ".join(parts)

    def admits(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):  # (an int is finite, however long)
                return False
            return ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                    and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))
        return True


def option(default: Any, *, choices=None, gt=None, ge=None, lt=None, le=None, help: str = "",
           only_with: dict[str, tuple] | None = None) -> Any:
    """A dataclass field with a default and a declared domain (see the module docstring); ``only_with``
    names the values of other options under which it has an effect (:func:`check_relevant`)."""
    dom = Domain(tuple(choices) if choices is not None else None, gt, ge, lt, le, help,
                 tuple((k, tuple(v)) for k, v in (only_with or {}).items()))
    return dataclasses.field(default=default, metadata={_KEY: dom})


def domain_of(field: dataclasses.Field) -> Domain:
    return field.metadata.get(_KEY, Domain())


def kind_of(field: dataclasses.Field) -> type | None:
    """The field's declared type when it is one of bool, int, float, str (annotations may be strings)."""
    return field.type if isinstance(field.type, type) else _KINDS.get(str(field.type))


def check_value(owner: str, name: str, kind: type | None, dom: Domain, value: Any) -> Any:
    """``value`` of option ``name`` of ``owner`` (``estimator concrete``, ``problem 'random'``) checked against
    its type and domain (an int becomes a float where a float is declared); anything else is one
    :class:`InputError`.  The one check of every option an estimator, problem or setup declares."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range (1e309 and up)
            raise InputError(f"option {name}={_shown(value)} of {owner} must be {_expected(kind, dom)}") from None
    if kind is not None and (not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool))):
        raise InputError(f"option {name}={_shown(value)} of {owner} must be {_expected(kind, dom)}")
    if not dom.admits(value):
        what = dom.describe() or "a finite number"
        raise InputError(f"option {name}={_shown(value)} of {owner} must be {what}")
    return value


def check_relevant(owner: str, obj: Any) -> None:
    """Refuse an option set (away from its default) where it has no effect: its ``only_with`` condition on
    another option does not hold (one :class:`InputError` naming both)."""
    for f in dataclasses.fields(obj):
        for other, values in domain_of(f).only_with:
            value = getattr(obj, f.name)
            if value != f.default and getattr(obj, other) not in values:
                raise InputError(f"option {f.name}={_shown(value)} of {owner} has no effect unless {other} is "
                                 f"{' or '.join(map(str, values))} (it is {getattr(obj, other)})")


def _shown(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters with its length said (a 400-digit number in an error line)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**limit else f"{str(value)[:12]}..."
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_field(owner: str, field: dataclasses.Field, value: Any) -> Any:
    """``value`` checked against the estimator field's type and domain (:func:`check_value`)."""
    return check_value(f"estimator {owner}", field.name, kind_of(field), domain_of(field), value)


def _expected(kind: type, dom: Domain) -> str:
    """What a value of the wrong type should have been, in words (``inf`` is read as a word, not a float)."""
    if dom.choices is not None:
        return dom.describe()
    what = {float: "a finite number", int: "an integer", bool: "True or False", str: "a string"}.get(kind, "")
    what = what or f"of type {kind.__name__}"
    return what + (f" {dom.describe()}" if dom.describe() else "")


def describe(field: dataclasses.Field) -> str:
    """``name: type = default (domain) — help`` for listings."""
    kind = kind_of(field)
    dom = domain_of(field)
    text = f"{field.name}: {kind.__name__ if kind else field.type} = {field.default!r}"
    if dom.describe():
        text += f" ({dom.describe()})"
    return text + (f" — {dom.help}" if dom.help else "")
