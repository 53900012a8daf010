"""The examples run: the third-party estimator passes the contract, and the script validates, scores
and reports it (here loaded from its file; CI also installs the package and runs the script with the
entry point, see ``.ci/run``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from bench.validate import check_estimator
from estimators import registry
from reference.problems import build_problem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLUGIN = f"{EXAMPLES / 'sbn_example_estimator' / 'sbn_example' / 'estimators.py'}:TemperedST"


def _script():
    spec = importlib.util.spec_from_file_location("score_my_estimator", EXAMPLES / "score_my_estimator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_estimator_passes_the_contract():
    report = check_estimator(registry.get(PLUGIN + ":temperature=0.5"))
    assert report.passed, report.table()
    assert registry.get("tempered-st:temperature=1.0").declarations()["path_deterministic"]


def test_tempered_st_at_temperature_one_is_deep_st():
    prob = build_problem("random:widths=2-3-3,points=4,seed=2")
    a = registry.get(PLUGIN).estimate(prob, 8, torch.Generator().manual_seed(0))
    b = registry.get("st").estimate(prob, 8, torch.Generator().manual_seed(0))
    assert all(torch.allclose(a[g], b[g], rtol=1e-12, atol=1e-14) for g in a)


def test_the_script_validates_scores_and_reports(tmp_path, capsys):
    rc = _script().main(["--estimator", PLUGIN + ":temperature=0.5", "--draws", "200", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "9 of 10 checks hold" in out and "one-draw relative RMSE" in out
    assert (tmp_path / "report" / "report.html").is_file() and (tmp_path / "report" / "report.pdf").is_file()


def test_the_script_exits_1_when_a_check_fails(tmp_path, capsys):
    bad = tmp_path / "claims.py"
    bad.write_text(Path(PLUGIN.rpartition(":")[0]).read_text().replace(
        'unbiased: ClassVar[bool] = False', 'unbiased: ClassVar[bool] = True').replace(
        '"tempered-st"', '"claims-unbiased-st"'))
    assert _script().main(["--estimator", f"{bad}:TemperedST:temperature=0.5", "--out", str(tmp_path)]) == 1
