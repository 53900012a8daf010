"""Estimator registry: a class decorator, discovery (built-in families, entry points, plugin refs), specs.

``@register`` validates an estimator's declarations and files it under its ``name`` with its
:class:`~estimators.plugins.Origin`.  Discovery imports every module of :mod:`estimators.families`
once, then loads the entry points of the group ``sbn_bench.estimators`` (installed plugins); a
``package.module:Class`` or ``path/file.py:Class`` spec loads that plugin on demand.  Adding a
built-in estimator is one new module in ``estimators/families`` (plus its test); the model and the
kernels live in packages of their own and need no exception list.

``get("concrete:tau=0.1")`` builds a configured instance: the spec is parsed once
(:mod:`estimators.spec`) and every option is checked against its declared type and domain by the
estimator itself (:mod:`estimators.options`).  Contract violations, name collisions and plugin
failures are one :class:`ContractError` line.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from typing import TypeVar

from . import plugins
from .base import Estimator
from .errors import EstimatorError, InputError, one_line, raised_at
from .spec import EstimatorSpec, parse

__all__ = ["ContractError", "register", "get", "names", "classes", "origin", "load_plugin", "parse_spec", "resolve",
           "task_record", "from_task"]

#: the package whose every module is an estimator family (discovered, never listed by hand)
FAMILIES = "estimators.families"
_REGISTRY: dict[str, type[Estimator]] = {}
_ORIGINS: dict[str, plugins.Origin] = {}
_loading: list[plugins.Origin] = []  # the origin of the plugin being imported (a stack)
_discovered = False

E = TypeVar("E", bound=type[Estimator])


class ContractError(InputError, TypeError):
    """An estimator class that breaks the contract, or a name registered twice."""


def _check_class(cls: type) -> Estimator:
    """Validate ``cls`` and return its default instance (declarations are read from instances)."""
    where = getattr(cls, "__qualname__", repr(cls))
    if not (isinstance(cls, type) and issubclass(cls, Estimator)):
        raise ContractError(f"{where} is not an Estimator subclass")
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise ContractError(f"estimator {where} must be a frozen dataclass")
    name = cls.name
    if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum() \
            or name.lower() != name or not name.isascii() or len(name) > 64:  # specs are ASCII: 'eé' ...
        raise ContractError(f"estimator {where} needs a lower-case ASCII alphanumeric name of at most 64 "
                            f"characters, got {repr(name)[:80]}")
    if not cls.__doc__ or len(cls.__doc__.strip()) < 40:
        raise ContractError(f"estimator {name!r} needs a docstring stating its formula, bias and cost")
    if not isinstance(cls.summary, str) or not cls.summary:
        raise ContractError(f"estimator {name!r} must declare a one-line summary")
    try:
        inst = cls()
    except InputError as exc:
        raise ContractError(f"estimator {name!r}: its default options are invalid: {exc}") from None
    except TypeError as exc:
        raise ContractError(f"estimator {name!r} must be buildable with default options: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin's own code failing is one line, not a traceback
        raise ContractError(f"estimator {name!r}: building its default instance raised {type(exc).__name__}: {exc}") \
            from None
    d = inst.declarations()
    if not isinstance(inst.unbiased, bool) or not isinstance(inst.path_deterministic, bool) \
            or not isinstance(inst.has_from_path, bool):
        raise ContractError(f"estimator {name!r}: unbiased, path_deterministic and has_from_path must be booleans")
    if not isinstance(inst.paths_per_draw, int) or d["paths_per_draw"] < 1:
        raise ContractError(f"estimator {name!r}: paths_per_draw must be an integer >= 1")
    overrides_estimate = type(inst)._estimate is not Estimator._estimate
    overrides_from_path = type(inst).from_path is not Estimator.from_path
    if not overrides_estimate and not (d["has_from_path"] and overrides_from_path):
        raise ContractError(f"estimator {name!r} must implement _estimate, or from_path with has_from_path = True")
    if d["has_from_path"] and not overrides_from_path:
        raise ContractError(f"estimator {name!r} declares has_from_path but does not implement from_path")
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ContractError(f"estimator {name!r}: option {f.name!r} needs a default")
    return inst


def _origin_for(cls: type) -> plugins.Origin:
    if _loading:
        return _loading[-1]
    module = inspect.getmodule(cls)
    if module is not None and module.__name__.startswith(FAMILIES + "."):
        return plugins.builtin_origin()
    return plugins.module_origin(module) if module is not None else plugins.Origin("module", "?", "unknown")


def register(cls: E) -> E:
    """Class decorator: validate the declarations and register ``cls`` under ``cls.name``."""
    _check_class(cls)
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        old = _ORIGINS[name].describe()
        raise ContractError(f"estimator name {name!r} is registered twice ({old}, and {cls.__module__}.{cls.__qualname__})")
    _REGISTRY[name] = cls
    _ORIGINS[name] = _origin_for(cls)
    return cls


def _register_loaded(obj, origin: plugins.Origin, what: str) -> list[str]:
    """Register a loaded plugin class (or collect what a loaded module registered)."""
    if isinstance(obj, type):
        if not isinstance(getattr(obj, "name", None), str):  # not a name at all (123, None, a list): the contract says so
            _check_class(obj)
        if obj.name in _REGISTRY and _REGISTRY[obj.name] is obj:
            _ORIGINS[obj.name] = origin
            return [obj.name]
        old = _ORIGINS.get(getattr(obj, "name", None))
        if old is not None and old.kind == origin.kind == "file" and old.where == origin.where:
            del _REGISTRY[obj.name]  # the same plugin file, edited since it was loaded: the new code replaces it
        _loading.append(origin)
        try:
            register(obj)
        finally:
            _loading.pop()
        return [obj.name]
    found = [n for n, c in _REGISTRY.items() if c.__module__ == getattr(obj, "__name__", None)]
    if not found:
        raise ContractError(f"{what} registers no estimator")
    for n in found:
        _ORIGINS[n] = origin
    return found


def _discover() -> None:
    """Import every built-in family module once, then load the installed entry points."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    families = importlib.import_module(FAMILIES)
    for info in pkgutil.iter_modules(families.__path__):
        importlib.import_module(f"{FAMILIES}.{info.name}")
    for ep in plugins.entry_points():
        obj, origin = plugins.load_entry_point(ep)
        what = f"estimator plugin {ep.name!r} ({ep.value})"
        try:
            _register_loaded(obj, origin, what)
        except (KeyboardInterrupt, InputError):
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure of user code: one line
            raise ContractError(f"{what}: checking it raised {type(exc).__name__}: {one_line(exc)}") from None


def load_plugin(ref: str) -> str:
    """Load ``package.module:Class`` or ``path/file.py:Class`` and return the estimator's name."""
    _discover()
    cls, origin = plugins.load_class(ref)
    try:  # the class is user code: its metaclass may raise on any attribute or check
        if not (isinstance(cls, type) and issubclass(cls, Estimator)):
            raise ContractError(f"plugin {ref!r} is not an Estimator subclass")
        return _register_loaded(cls, origin, f"plugin {ref!r}")[0]
    except (KeyboardInterrupt, InputError):
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure of user code: one line
        raise ContractError(f"plugin {ref!r}: checking its class raised {type(exc).__name__}: {one_line(exc)}") \
            from None


def classes() -> dict[str, type[Estimator]]:
    """All registered estimator classes by name (sorted)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def origin(name: str) -> plugins.Origin:
    """Where the estimator ``name`` comes from."""
    _discover()
    if name not in _ORIGINS:
        raise InputError(f"unknown estimator {name!r}; run 'sbn-bench list estimators' to see them")
    return _ORIGINS[name]


def names(unbiased: bool | None = None) -> list[str]:
    """Registered names, optionally only those whose default instance is (un)biased."""
    return [n for n, c in classes().items() if unbiased is None or c().unbiased == unbiased]


def parse_spec(spec: str) -> tuple[str, dict[str, object]]:
    """``name:key=value,...`` -> ``(name, options)`` (the grammar of :mod:`estimators.spec`)."""
    s = parse(spec)
    return s.name or (s.source or ""), dict(s.options)


def resolve(spec: str | EstimatorSpec) -> EstimatorSpec:
    """The spec with its plugin loaded and its registered name filled in."""
    s = parse(spec) if isinstance(spec, str) else spec
    if s.source and (not s.name or s.name not in classes()):
        s = EstimatorSpec(load_plugin(s.source), dict(s.options), s.source)
    return s


def task_record(spec: str | EstimatorSpec) -> tuple[Estimator, dict]:
    """The estimator named by ``spec`` and what a stored task records about it: its canonical spec,
    name, every option, origin identity and (for a module or file plugin) the source a fresh worker
    process loads it from.  :func:`from_task` rebuilds the estimator from these fields."""
    s = resolve(spec)
    est = get(s)
    canonical, options = describe(est)
    try:  # a task rebuilds the estimator from these options (from_task): checked now, before anything runs
        rebuilt = get(EstimatorSpec(est.name, options, s.source))
    except InputError as exc:
        raise EstimatorError(f"estimator {est.name!r}: its options() do not rebuild it: {one_line(exc)}") from None
    try:
        differs = [f.name for f in dataclasses.fields(est) if not _same(getattr(est, f.name), getattr(rebuilt, f.name))]
    except BaseException as exc:  # noqa: BLE001 - a plugin's field whose comparison raises
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise EstimatorError(f"estimator {est.name!r}: its fields cannot be compared with those rebuilt from its "
                             f"options() ({type(exc).__name__}: {one_line(exc)})") from None
    if differs:  # options() describing another instance would score one estimator under another's name
        raise EstimatorError(f"estimator {est.name!r}: its options() describe another instance (its field "
                             f"{differs[0]!r} differs when rebuilt from them)")
    return est, dict(estimator=canonical, estimator_name=est.name, estimator_options=options,
                     estimator_origin=origin(est.name).identity, estimator_source=s.source)


#: the types an estimator's option may have (exactly: a subclass defined by a plugin would not reach a worker process)
PLAIN_OPTION_TYPES = (bool, int, float, str, type(None))


def _same(a, b) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN here


def describe(est: Estimator) -> tuple[str, dict]:
    """``est.spec`` and a copy of ``est.options()``, checked: a plugin may override either, and what they return is
    what a task records and rebuilds the estimator from.  The spec must be a one-line string, the options a dict
    of option names to plain values (:data:`PLAIN_OPTION_TYPES`); any failure is one
    :class:`~estimators.errors.EstimatorError` naming the estimator, never an internal error."""
    name = getattr(type(est), "name", None) or type(est).__name__
    try:
        canonical, options = est.spec, est.options()
        if type(canonical) is not str or not canonical or not canonical.isprintable():
            raise EstimatorError(f"estimator {name!r}: its spec must be a one-line string, got "
                                 f"{type(canonical).__name__} {one_line(repr(canonical), 80)}")
        if type(options) is not dict or any(type(k) is not str for k in options):
            raise EstimatorError(f"estimator {name!r}: options() must return a dict (exactly) with option names "
                                 f"(strings) as keys, got {type(options).__name__}")
        options = dict(options)
        bad = [k for k, v in options.items() if type(v) not in PLAIN_OPTION_TYPES]
        if bad:
            raise EstimatorError(f"estimator {name!r}: option {bad[0]!r} of options() is a "
                                 f"{type(options[bad[0]]).__name__}; options are plain bool, int, float, str or None")
    except (KeyboardInterrupt, InputError):
        raise
    except BaseException as exc:  # noqa: BLE001 - the estimator's own code
        what = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else \
            f"raised {type(exc).__name__}: {one_line(exc)}"
        raise EstimatorError(f"estimator {name!r}: describing its spec and options {what}{raised_at(exc)}") from None
    return canonical, options


def from_task(task) -> Estimator:
    """The estimator of a task planned with :func:`task_record` (no spec string is parsed again)."""
    return get(EstimatorSpec(task["estimator_name"], task["estimator_options"], task.get("estimator_source")))


def get(spec: str | EstimatorSpec) -> Estimator:
    """Build the estimator named by ``spec`` (``name[:key=value,...]`` or a plugin ref, or a parsed
    :class:`~estimators.spec.EstimatorSpec`)."""
    s = resolve(spec)
    table = classes()
    if s.name not in table:
        raise InputError(f"unknown estimator {s.name!r}; run 'sbn-bench list estimators' to see them")
    cls = table[s.name]
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in s.options:
        if key not in fields:
            raise InputError(f"estimator {s.name!r} has no option {key!r} (options: {', '.join(fields) or 'none'})")
    try:
        est = cls(**s.options)
    except (KeyboardInterrupt, InputError):
        raise
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad options for {s.text()!r}: {one_line(exc)}") from None
    except BaseException as exc:  # noqa: BLE001 - a plugin's own construction code (its __post_init__)
        what = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else \
            f"raised {type(exc).__name__}: {one_line(exc)}"
        raise EstimatorError(f"estimator {s.name!r}: building it {what}{raised_at(exc)}") from None
    describe(est)  # its spec and options, which callers read, are checked once here
    return est
