"""The house rules of the code base, read from the source with :mod:`ast` (nothing is imported).

- **Directions.** ``bench -> reference -> estimators`` and ``bench -> reports``; ``estimators``
  imports no other package of the project, ``reports`` none at all (and never torch).  Inside
  ``estimators`` the model knows no kernel and no estimator, the kernels know no estimator; inside
  ``bench`` the sub-packages (``timing``, ``training``, ``gate``) use the core but not each other,
  and nothing imports a command (``bench.cli`` alone dispatches to them).
- **No cycles** between modules, counting imports inside functions too (they hide cycles).
- **Function-level imports** only for optional or heavy dependencies (:data:`LAZY_OK`), never for
  the project's own modules.

The rules and the layering are explained in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("estimators", "reference", "bench", "reports")

#: layer -> the layers it may import.  A layer is a package, sub-package or module; a module belongs to
#: the most specific layer that contains it, and an allowed layer admits everything inside it (except
#: the layers listed on their own: ``bench`` admits the benchmark core, not ``bench.timing``).
ALLOWED = {
    "estimators.model": {"estimators.errors"},
    "estimators.errors": set(),
    "estimators.kernels": {"estimators.errors", "estimators.model"},
    "estimators.options": {"estimators.errors"},
    "estimators.torch_state": set(),
    "estimators.base": {"estimators.errors", "estimators.model", "estimators.options", "estimators.torch_state"},
    "estimators.spec": {"estimators.errors"},
    "estimators.inputs": {"estimators.errors"},
    "estimators.plugins": {"estimators.errors", "estimators.torch_state"},
    "estimators.registry": {"estimators.errors", "estimators.base", "estimators.spec", "estimators.plugins"},
    "estimators.families": {"estimators.errors", "estimators.model", "estimators.kernels", "estimators.base",
                            "estimators.registry", "estimators.options"},
    "estimators": {"estimators.errors", "estimators.model", "estimators.base", "estimators.registry",
                   "estimators.spec", "estimators.options"},
    "reference": {"estimators"},
    "reports": set(),
    "bench": {"estimators", "reference", "reports", "bench.timing.measure"},
    "bench.timing.measure": set(),  # the measuring primitives: the core's cost per draw uses them too
    "bench.timing": {"bench", "bench.timing.measure", "estimators", "reference", "reports"},
    "bench.training": {"bench", "estimators", "reference", "reports"},
    "bench.gate": {"bench", "estimators", "reference", "reports"},
    "bench.commands": {"bench", "bench.timing", "bench.timing.measure", "bench.training", "bench.gate", "estimators", "reference", "reports"},
    "bench.cli": {"bench", "bench.commands", "estimators"},
    "bench.__main__": {"bench.cli"},
}
#: third-party modules that may be imported inside a function: optional extras or costly on first use
#: (dask, pyarrow: extras; triton: CUDA only; pynvml: optional; torch.utils.benchmark: seconds to import)
LAZY_OK = {"dask", "pyarrow", "triton", "pynvml", "torch.utils.benchmark"}
#: third-party modules that a package may not import at all
FORBIDDEN = {"reports": {"torch"}}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Absolute names a statement imports (``from a import b`` yields ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module.split(".")
        is_pkg = MODULES.get(module, Path()).name == "__init__.py"
        pkg = pkg[: len(pkg) - node.level + (1 if is_pkg else 0)]
        base = ".".join(pkg + ([base] if base else []))
    names = []
    for a in node.names:
        full = f"{base}.{a.name}" if base else a.name
        names.append(full if full in MODULES else base)
    return names


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """``(imported name, line, inside a function)`` for every import statement of ``module``."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    out = []

    def walk(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if isinstance(child, ast.ImportFrom) and child.module == "__future__":
                    continue
                out.extend((name, child.lineno, in_func) for name in _resolve(module, child))
            walk(child, in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(tree, False)
    return out


def _project(name: str) -> str | None:
    """The project module ``name`` refers to (itself or its longest known prefix), else None."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in MODULES:
            return cand
        parts.pop()
    return None


def _layer(module: str) -> str:
    best = module.split(".")[0]
    for layer in ALLOWED:
        if (module == layer or module.startswith(layer + ".")) and len(layer) > len(best):
            best = layer
    return best


_ALL_BENCH = {layer for layer in ALLOWED if layer.startswith("bench")}
EDGES = {m: [(t, line, lazy, name) for name, line, lazy in _imports(m) if (t := _project(name))] for m in MODULES}


def test_the_layout_is_known():
    """Every module belongs to a layer of the table (a new sub-package must state its place)."""
    for m in MODULES:
        assert _layer(m) in ALLOWED, m


def allowed(module: str, target: str) -> bool:
    """Whether ``module`` may import ``target`` (both project modules)."""
    src, dst = _layer(module), _layer(target)
    if dst == "bench.commands" and target != "bench.commands":  # a command is a leaf: only the CLI reaches it
        return module in ("bench.cli", "bench.commands")
    if dst == src or dst in ALLOWED[src] or target == "bench":  # every layer of bench may read __version__
        return True
    return dst not in _ALL_BENCH and any(dst.startswith(a + ".") for a in ALLOWED[src])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_import_directions(module):
    for target, line, _, _ in EDGES[module]:
        assert allowed(module, target), (
            f"{MODULES[module].relative_to(ROOT)}:{line} imports {target} ({_layer(module)} may not import "
            f"{_layer(target)})")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_function_level_imports_are_for_optional_or_heavy_dependencies(module):
    for name, line, lazy in _imports(module):
        if lazy:
            assert _project(name) is None, (
                f"{MODULES[module].relative_to(ROOT)}:{line} imports the project's {name} inside a function")
            top = name.split(".")[0]
            assert name in LAZY_OK or top in LAZY_OK or any(name.startswith(k + ".") for k in LAZY_OK), (
                f"{MODULES[module].relative_to(ROOT)}:{line} imports {name} inside a function; import it at the "
                f"top, or add it to LAZY_OK with the reason (optional extra or heavy first use)")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_forbidden_third_party_imports(package):
    for m in MODULES:
        if m == package or m.startswith(package + "."):
            for name, line, _ in _imports(m):
                assert name.split(".")[0] not in FORBIDDEN[package], f"{m}:{line} imports {name}"


def cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for m in graph:
        if m not in index:
            visit(m)
    return sccs


def test_no_import_cycles():
    """No module reaches itself through imports (package ``__init__`` modules included)."""
    graph = {m: sorted({t for t, *_ in EDGES[m] if t != m}) for m in MODULES}
    assert not cycles(graph), f"import cycles: {cycles(graph)}"


def test_the_rules_can_fail(tmp_path):
    """Each rule rejects what it is there to reject: a function-level import is seen as one, a
    two-module cycle is found, and imports against the layering are refused."""
    (tmp_path / "b.py").write_text("import os\n\ndef f():\n    from reference import exact\n")
    saved = dict(MODULES)
    MODULES["fake.b"] = tmp_path / "b.py"
    try:
        assert ("reference", 4, True) in _imports("fake.b") or ("reference.exact", 4, True) in _imports("fake.b")
        assert ("os", 1, False) in _imports("fake.b")
    finally:
        MODULES.clear()
        MODULES.update(saved)
    assert cycles({"a": ["b"], "b": ["a"], "c": ["a"]}) == [["a", "b"]]
    assert not cycles({"a": ["b"], "b": [], "c": ["a"]})
    assert not allowed("estimators.model.problem", "estimators.families.psa")
    assert not allowed("estimators.kernels.psa_fc", "estimators.base")
    assert not allowed("reference.exact", "bench.store")
    assert not allowed("reports.plots", "estimators.model")
    assert not allowed("bench.timing.harness", "bench.gate.design")
    assert not allowed("bench.sweep", "bench.commands.run")
    assert not allowed("bench.commands.time", "bench.commands.run")
    assert allowed("bench.commands.time", "bench.timing.harness")
    assert allowed("reference.problems", "estimators.model.problem")
    assert allowed("bench.cli", "bench.commands.run")
