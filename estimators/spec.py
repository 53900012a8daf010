"""The one estimator spec grammar, parsed once.

``name`` or ``name:key=value,...`` names a registered estimator and its options; values are read
with :func:`ast.literal_eval` (bare words are strings: ``baseline=ema``).  A plugin estimator not
yet registered is named by where it lives, ``package.module:ClassName`` or
``path/to/file.py:ClassName``, optionally followed by ``:key=value,...``.

:func:`parse` returns an :class:`EstimatorSpec`; everything downstream passes that object, or the
structured ``name`` / ``options`` it stores with each task, never the string.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field

from .errors import InputError

__all__ = ["EstimatorSpec", "no_control_characters", "options_json", "parse", "parse_options", "plain_spec",
           "split_list"]

#: a number as the grammar accepts it: plain decimal, optional sign, fraction and exponent (no ``0x10``, ``1_000``)
_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
#: ``module.path:Class`` or ``some/file.py:Class`` (the part before the colon has a dot or a slash)
_REF = re.compile(r"^(?P<ref>[^:=,\s]*[./\\][^:=,\s]*:[A-Za-z_]\w*)(?::(?P<opts>.*))?$")


@dataclass(frozen=True)
class EstimatorSpec:
    """A parsed spec: the estimator's registered ``name`` (empty until a plugin ``source`` is loaded),
    its ``options`` as given, and the plugin ``source`` (``module:Class`` or ``file.py:Class``)."""

    name: str
    options: dict = field(default_factory=dict)
    source: str | None = None

    def text(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        head = self.name or self.source or ""
        return head + (":" + opts if opts else "")


def parse_options(text: str, spec: str) -> dict[str, object]:
    """``key=value,...`` into literal-evaluated values (one :class:`InputError` naming a bad item)."""
    out: dict[str, object] = {}
    if not text.strip():
        return out
    for item in text.split(","):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            hint = (f" (a plugin class? name its module with a dot or as a file: package.module:{item.strip()} or "
                    f"./file.py:{item.strip()})") if item.strip().isidentifier() and item.strip()[:1].isupper() else ""
            raise InputError(f"bad option {item!r} in {spec!r}; expected key=value{hint}")
        raw = raw.strip()
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = raw  # bare words are strings: baseline=constant
        if isinstance(value, (int, float, complex)) and not isinstance(value, bool) and not _DECIMAL.match(raw):
            raise InputError(f"option {item.strip()!r} in {spec!r}: write numbers in plain decimal (like 1000, 0.5 "
                             f"or 1e-3)")
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"option {item.strip()!r} in {spec!r} is not a finite number")
        if key.strip() in out:
            raise InputError(f"option {key.strip()!r} is given twice in {spec!r}")
        out[key.strip()] = value
    return out


def no_control_characters(text: str, what: str) -> str:
    """Refuse a spec holding control characters (a newline pasted into a flag): it would be stored as typed."""
    if any(ord(c) < 32 for c in str(text)):
        raise InputError(f"{what} {text!r} holds control characters (a newline?)")
    return text


def plain_spec(text: str, what: str = "spec") -> str:
    """Refuse control characters (named as such) and spaces in a spec: either would be stored, and keyed, as
    typed (``'random: widths=2-3'``, ``'psa-2-5-5-5 @chk-1'``)."""
    no_control_characters(text, what)
    if any(c.isspace() for c in text):
        raise InputError(f"{what} {text!r} holds spaces; write it without them")
    return text


def parse(spec: str) -> EstimatorSpec:
    """Parse ``name[:options]`` or ``module:Class[:options]`` / ``file.py:Class[:options]``."""
    no_control_characters(str(spec), "spec")  # before stripping: a tab or newline at either end is refused too
    text = str(spec).strip()
    m = _REF.match(text)
    plain_spec(text)
    if not (m.group("opts") or "" if m else text).isascii():  # full-width digits, look-alike letters
        raise InputError(f"spec {text!r} holds non-ASCII characters in its name or options")
    name, _, rest = text.partition(":")
    if not m and re.search(r"[./\\]", name):  # no registered name holds these: a plugin reference without a class
        raise InputError(f"spec {text!r} names a plugin but no class: a class name must follow the colon "
                         f"({name.strip()}:ClassName)")
    if text.endswith(":"):
        raise InputError(f"spec {text!r} ends with a colon but gives no options; drop the colon or add key=value")
    if m:
        return EstimatorSpec("", parse_options(m.group("opts") or "", text), m.group("ref"))
    return EstimatorSpec(name.strip(), parse_options(rest, text))


def split_list(text: str) -> list[str]:
    """A comma list of specs whose options also use commas: ``"psa,reinforce:baseline=ema,decay=0.5,st"``
    -> ``["psa", "reinforce:baseline=ema,decay=0.5", "st"]`` (a ``key=value`` item joins the spec before it)."""
    out: list[str] = []
    no_control_characters(text, "--estimators")  # before the items are stripped: `st<TAB>` is refused, not read as st
    if not str(text).strip():
        raise InputError("--estimators is empty")
    for token in (t.strip() for t in str(text).split(",")):
        if not token:
            raise InputError(f"--estimators {text!r} has an empty item")
        if "=" in token and ":" not in token.split("=", 1)[0] and out and ":" in out[-1]:
            out[-1] += "," + token
        else:
            out.append(token)
    if not out:
        raise InputError("--estimators is empty")
    return out


def options_json(options: dict) -> str:
    """Canonical JSON of an option mapping (sorted keys), as stored with each task."""
    return json.dumps(options, sort_keys=True, default=str)
