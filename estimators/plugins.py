"""Estimators from outside the package: entry points, modules and files, and where each came from.

- An installed distribution registers estimators under the entry-point group
  ``sbn_bench.estimators`` (``myest = mypkg.estimators:MyEstimator``, or a module whose import
  registers them); discovery loads every such entry point.
- ``package.module:ClassName`` imports a module on ``sys.path``; ``path/to/file.py:ClassName``
  loads a file (work in progress, no install).

Every estimator class carries an :class:`Origin`: built-in, a distribution and its version, or a
file and the SHA-256 of its content.  Its :attr:`Origin.identity` is stored with every task and
enters the task's key, so a changed plugin is recomputed, never silently reused.  Anything that
goes wrong (an import error, a missing class, a class that breaks the contract, a name already
taken) is one :class:`~estimators.errors.InputError` line.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, one_line
from .torch_state import kept_torch_state

__all__ = ["ENTRY_POINT_GROUP", "Origin", "builtin_origin", "code_digest", "entry_points", "load_class", "module_origin",
           "package_version"]

ENTRY_POINT_GROUP = "sbn_bench.estimators"
DISTRIBUTION = "sbn-bench"


def package_version() -> str:
    """The installed sbn-bench version (``unknown`` when run from a source tree without install)."""
    try:
        return md.version(DISTRIBUTION)
    except md.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Origin:
    """Where an estimator class comes from: ``kind`` is ``builtin``, ``distribution``, ``module`` or
    ``file``; ``where`` names it (distribution, module or path); ``version`` is the distribution's
    version or the file's content hash."""

    kind: str
    where: str
    version: str

    @property
    def identity(self) -> str:
        """One string that changes whenever the estimator's code may have changed."""
        return f"{self.kind}:{self.where}@{self.version}"

    def describe(self) -> str:
        if self.kind == "builtin":
            return f"built-in (sbn-bench {self.version})"
        if self.kind == "file":
            return f"file {self.where} (sha256 {self.version[:12]})"
        return f"{self.kind} {self.where} {self.version}"


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 (first 12 hex digits) of the source of the ``estimators`` package: every ``.py`` file
    under it, by relative path and content.  Any change to the estimators' code (a family, a kernel,
    the model) changes it, so results made by other code are recomputed, not reused, even when the
    package version was not bumped."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def builtin_origin() -> Origin:
    """Built-ins are identified by the package version and the digest of the estimators' source."""
    return Origin("builtin", DISTRIBUTION, f"{package_version()}+src.{code_digest()}")


def _file_hash(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def module_origin(module) -> Origin:
    """A module's distribution and version when installed, else its file and content hash."""
    top = module.__name__.split(".")[0]
    dists = md.packages_distributions().get(top, [])
    if dists:
        dist = dists[0]
        try:
            return Origin("distribution", dist, md.version(dist))
        except md.PackageNotFoundError:  # pragma: no cover - a namespace without metadata
            pass
    path = getattr(module, "__file__", None)
    return Origin("module", module.__name__, _file_hash(path) if path else "unknown")


def _import_file(path: str):
    if not os.path.exists(path):
        raise InputError(f"plugin file {path!r} does not exist")
    if not os.path.isfile(path):
        raise InputError(f"plugin file {path!r} is not a regular Python file (a directory, pipe or device?)")
    digest = _file_hash(path)
    mod_name = f"sbn_bench_plugin_{digest[:16]}"
    if mod_name in sys.modules:
        return sys.modules[mod_name], Origin("file", os.path.abspath(path), digest)
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"plugin file {path!r} cannot be imported (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside the user's file
    cwd = os.getcwd()  # a plugin that changes directory at import must not move the paths given after it
    try:
        with kept_torch_state():
            spec.loader.exec_module(module)
    except KeyboardInterrupt:
        del sys.modules[mod_name]
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure of user code: one line
        del sys.modules[mod_name]
        raise InputError(f"plugin file {path!r} failed to import: {type(exc).__name__}: {one_line(exc)}") from None
    finally:
        sys.dont_write_bytecode = saved
        if os.getcwd() != cwd:
            os.chdir(cwd)
    return module, Origin("file", os.path.abspath(path), digest)


def load_class(ref: str):
    """``(class, origin)`` for ``package.module:ClassName`` or ``path/file.py:ClassName``."""
    target, _, cls_name = ref.rpartition(":")
    if target.endswith(".py") or os.sep in target or "/" in target:
        module, origin = _import_file(target)
    else:
        try:
            with kept_torch_state():
                module = importlib.import_module(target)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure of user code: one line
            raise InputError(f"plugin module {target!r} failed to import: {type(exc).__name__}: {one_line(exc)}") \
                from None
        origin = module_origin(module)
    try:
        cls = getattr(module, cls_name, None)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a module __getattr__ of user code: one line
        raise InputError(f"plugin {ref!r}: looking up {cls_name!r} in {target!r} raised {type(exc).__name__}: "
                         f"{one_line(exc)}") from None
    if cls is None:
        raise InputError(f"plugin {ref!r}: {target!r} has no class {cls_name!r}")
    return cls, origin


def entry_points() -> list:
    """The installed entry points of the group :data:`ENTRY_POINT_GROUP`."""
    return list(md.entry_points(group=ENTRY_POINT_GROUP))


def load_entry_point(ep):
    """``(object, origin)`` of one entry point: a class, or a module whose import registered its estimators."""
    try:
        with kept_torch_state():
            obj = ep.load()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure of user code: one line
        raise InputError(f"estimator plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: "
                         f"{one_line(exc)}") from None
    dist = getattr(ep, "dist", None)
    origin = (Origin("distribution", dist.name, dist.version) if dist is not None
              else module_origin(sys.modules[obj.__module__] if isinstance(obj, type) else obj))
    return obj, origin
