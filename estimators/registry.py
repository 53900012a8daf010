"""Estimator registry: a class decorator, discovery of every estimator module, and spec parsing.

``@register`` validates an estimator's declarations and files it under its ``name``.  Discovery
imports every module of :mod:`estimators.families` once, so adding an estimator is one new module
there (plus its test); the model and the kernels live in packages of their own and need no
exception list.  ``get("concrete:tau=0.1")`` builds a configured instance; values
are parsed with :func:`ast.literal_eval` and checked against the field's type.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import pkgutil
from typing import TypeVar

from .base import Estimator
from .errors import InputError

__all__ = ["register", "get", "names", "classes", "parse_spec"]

_REGISTRY: dict[str, type[Estimator]] = {}
#: the package whose every module is an estimator family (discovered, never listed by hand)
FAMILIES = "estimators.families"
_discovered = False

E = TypeVar("E", bound=type[Estimator])


def register(cls: E) -> E:
    """Class decorator: validate the declarations and register ``cls`` under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Estimator)):
        raise TypeError(f"{cls!r} is not an Estimator subclass")
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise TypeError(f"estimator {cls.__name__} must be a frozen dataclass")
    name = cls.name
    if not name or not name.replace("-", "").replace("_", "").isalnum() or name.lower() != name:
        raise TypeError(f"estimator {cls.__name__} needs a lower-case alphanumeric name, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise TypeError(f"estimator name {name!r} is registered twice")
    if not isinstance(cls.unbiased, bool) or cls.paths_per_draw < 1 or not cls.summary:
        raise TypeError(f"estimator {name!r} must declare unbiased (bool), paths_per_draw >= 1 and a summary")
    if not cls.__doc__ or len(cls.__doc__.strip()) < 40:
        raise TypeError(f"estimator {name!r} needs a docstring stating its formula, bias and cost")
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    """Import every module of :mod:`estimators.families` once (each registers its estimators)."""
    global _discovered
    if _discovered:
        return
    families = importlib.import_module(FAMILIES)
    for info in pkgutil.iter_modules(families.__path__):
        importlib.import_module(f"{FAMILIES}.{info.name}")
    _discovered = True


def classes() -> dict[str, type[Estimator]]:
    """All registered estimator classes by name (sorted)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def names(unbiased: bool | None = None) -> list[str]:
    """Registered names, optionally only the (un)biased ones."""
    return [n for n, c in classes().items() if unbiased is None or c.unbiased == unbiased]


def parse_spec(spec: str) -> tuple[str, dict[str, object]]:
    """Split ``name:key=value,...`` into the name and literal-evaluated keyword values."""
    name, _, rest = spec.strip().partition(":")
    kwargs: dict[str, object] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, raw = item.partition("=")
            if not eq or not key.strip():
                raise InputError(f"bad option {item!r} in {spec!r}; expected key=value")
            raw = raw.strip()
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw  # bare words are strings: baseline=constant
            kwargs[key.strip()] = value
    return name.strip(), kwargs


def _coerce(cls: type, field: dataclasses.Field, value: object, spec: str) -> object:
    kind = field.type if isinstance(field.type, type) else {"float": float, "int": int, "bool": bool, "str": str}.get(
        str(field.type)
    )
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is not None and not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"option {field.name}={value!r} of {spec!r} must be of type {getattr(kind, '__name__', kind)}")
    return value


def get(spec: str) -> Estimator:
    """Build the estimator named by ``spec`` (``name`` or ``name:key=value,...``)."""
    name, kwargs = parse_spec(spec)
    table = classes()
    if name not in table:
        raise InputError(f"unknown estimator {name!r}; run 'sbn-bench list estimators' to see them")
    cls = table[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in list(kwargs.items()):
        if key not in fields:
            allowed = ", ".join(fields) or "none"
            raise InputError(f"estimator {name!r} has no option {key!r} (options: {allowed})")
        kwargs[key] = _coerce(cls, fields[key], value, spec)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad options for {spec!r}: {exc}") from None
