"""Estimators from outside the package: files, modules, entry points; origins; every failure is one line."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from bench.cli import main
from estimators import registry
from estimators.errors import InputError
from estimators.plugins import ENTRY_POINT_GROUP

PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass
    from typing import ClassVar

    import torch

    from estimators.base import Estimator
    from estimators.model import backprop
    from estimators.options import option


    @dataclass(frozen=True)
    class ScaledST(Estimator):
        """Straight-through with a surrogate slope s * F'(a) (a plugin written for the tests).

        Formula: backprop with unit slopes s * 2F'(a); biased; one sampled pass and one backward per draw.
        """

        name: ClassVar[str] = "{name}"
        summary: ClassVar[str] = "deep ST with a scaled surrogate slope (test plugin)"
        path_deterministic: ClassVar[bool] = True
        has_from_path: ClassVar[bool] = True

        scale: float = option(1.0, gt=0.0, help="slope multiplier")

        def from_path(self, problem, path, generator=None):
            slopes = [self.scale * problem.mean_slope * problem.noise_law.pdf(a) for a in path.a]
            return backprop(problem, path.inputs, slopes, problem.enc(path.x[-1]))
''')


def _write(tmp_path, name="scaled-st", file="scaled.py", extra=""):
    path = tmp_path / file
    path.write_text(PLUGIN.replace("{name}", name) + extra)
    return path


def test_a_file_plugin_loads_with_its_origin(tmp_path):
    path = _write(tmp_path)
    est = registry.get(f"{path}:ScaledST:scale=0.5")
    assert est.name == "scaled-st" and est.scale == 0.5 and est.spec == "scaled-st:scale=0.5"
    origin = registry.origin("scaled-st")
    assert origin.kind == "file" and origin.where == str(path) and len(origin.version) == 64
    assert registry.get("scaled-st").scale == 1.0  # registered: the name works from now on
    with pytest.raises(InputError, match="must be > 0"):
        registry.get("scaled-st:scale=-1")


def test_a_module_plugin_loads_with_its_origin(tmp_path, monkeypatch):
    (tmp_path / "myplugpkg").mkdir()
    (tmp_path / "myplugpkg" / "__init__.py").write_text("")
    _write(tmp_path / "myplugpkg", name="mod-st", file="ests.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    est = registry.get("myplugpkg.ests:ScaledST")
    assert est.name == "mod-st" and registry.origin("mod-st").kind == "module"
    monkeypatch.delitem(sys.modules, "myplugpkg.ests")
    monkeypatch.delitem(sys.modules, "myplugpkg")


def test_an_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "epplug").mkdir(parents=True)
    (site / "epplug" / "__init__.py").write_text(PLUGIN.replace("{name}", "ep-st"))
    info = site / "epplug-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: epplug\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nep-st = epplug:ScaledST\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_discovered", False)
    assert "ep-st" in registry.names()
    assert registry.origin("ep-st").describe() == "distribution epplug 1.2.3"
    monkeypatch.delitem(sys.modules, "epplug")


@pytest.mark.parametrize("body, ref, message", [
    ("raise RuntimeError('boom')\n", "bad.py:X", "failed to import: RuntimeError: boom"),
    ("x = 1\n", "bad.py:Missing", "has no class 'Missing'"),
    ("class NotOne:\n    pass\n", "bad.py:NotOne", "is not an Estimator subclass"),
])
def test_plugin_failures_are_one_line(tmp_path, body, ref, message):
    (tmp_path / "bad.py").write_text(body)
    with pytest.raises(InputError, match=message):
        registry.get(str(tmp_path / ref))


def test_contract_breaks_and_collisions_are_refused(tmp_path):
    text = _write(tmp_path, name="nodoc-st", file="nodoc.py").read_text()
    start = text.index('    """Straight-through')
    end = text.index('"""', text.index("per draw.")) + 3
    (tmp_path / "nodoc.py").write_text(text[:start] + '    """Short."""' + text[end:])
    with pytest.raises(registry.ContractError, match="docstring"):
        registry.get(f"{tmp_path / 'nodoc.py'}:ScaledST")
    clash = _write(tmp_path, name="psa", file="clash.py")
    with pytest.raises(registry.ContractError, match="registered twice"):
        registry.get(f"{clash}:ScaledST")
    assert registry.origin("psa").kind == "builtin"


def test_cli_refuses_a_broken_plugin_with_exit_2(tmp_path, capsys):
    (tmp_path / "bad.py").write_text("import no_such_module_here\n")
    db = tmp_path / "r.sqlite"
    assert main(["run", "--problem", "random:widths=2-2-2,points=2", "--estimators", f"{tmp_path}/bad.py:X",
                 "-N", "10", "--db", str(db), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed to import" in err[0]
    assert not db.exists()


def test_list_shows_where_a_plugin_comes_from(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["list", "estimators", "--estimators", f"{path}:ScaledST"]) == 0
    out = capsys.readouterr().out
    assert "scaled-st" in out and f"from: file {path} (sha256" in out and "scale: float = 1.0 (> 0)" in out


def test_runs_record_the_origin_and_recompute_a_changed_plugin(tmp_path, capsys):
    path = _write(tmp_path)
    db = str(tmp_path / "r.sqlite")
    argv = ["run", "--problem", "random:widths=2-2-2,points=3,seed=2", "--estimators", f"{path}:ScaledST,st",
            "-N", "64", "--db", db, "--no-report", "--executor", "process", "--workers", "1"]
    assert main(argv) == 0
    assert "2 tasks, 0 already stored, 2 computed" in capsys.readouterr().out
    assert main(argv) == 0
    assert "2 tasks, 2 already stored, 0 computed" in capsys.readouterr().out
    path.write_text(path.read_text() + "\n# edited: new code, new results\n")
    assert main(argv) == 0
    assert "2 tasks, 1 already stored, 1 computed" in capsys.readouterr().out
    from bench.store import Store

    with Store(db) as store:
        tasks = store.load_run("latest").tasks
    origins = dict(zip(tasks["estimator"], tasks["estimator_origin"]))
    assert origins["st"].startswith("builtin:sbn-bench@")
    assert origins["scaled-st"].startswith(f"file:{path}@")
    assert len(tasks) == 2  # the old plugin version's task is superseded: kept in the store, out of the results
    import sqlite3
    with sqlite3.connect(db) as con:
        (old,) = con.execute("SELECT spec FROM tasks WHERE status = 'superseded'").fetchall()
    assert json.loads(old[0])["estimator_origin"] != origins["scaled-st"]  # still attributed to its own code


def test_the_gate_accepts_plugin_estimators(tmp_path, capsys):
    path = _write(tmp_path)
    base = str(tmp_path / "baseline.json")
    ref = f"{path}:ScaledST:scale=0.5"
    assert main(["check", "--estimators", ref, "--baseline", base, "--update-baseline", "--failures-only"]) == 0
    assert main(["check", "--estimators", ref, "--baseline", base, "--failures-only", "--allow-dirty-baseline"]) == 0
    assert "checks hold" in capsys.readouterr().out


def test_the_packaged_baseline_gates_only_builtin_estimators(tmp_path):
    """A plain ``sbn-bench check`` (packaged baseline) leaves installed plugins out: they are checked with
    ``--estimators`` against the user's own baseline."""
    from bench.commands.check import _estimators

    registry.get(f"{_write(tmp_path)}:ScaledST")
    assert "scaled-st" not in {e.name for e in _estimators(None, builtin_only=True)}
    assert "scaled-st" in {e.name for e in _estimators(None, builtin_only=False)}
