"""The Python API: its docstring examples run (doctest), and each function behaves as documented."""

from __future__ import annotations

import doctest

import pytest

from bench import api
from estimators.errors import InputError


def test_the_docstring_examples_run():
    result = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0


def test_score_matches_the_exact_gradient_scale_and_keeps_nothing_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    df = api.score(["tanh", "reinforce"], ["random:widths=2-3-3,points=4,seed=2"], draws=300, grid=[1, 10, 100])
    assert set(df.columns) == {"problem", "estimator", "group", "metric", "M", "value", "lo", "hi"}
    assert set(df["M"][df["metric"] == "rel_rmse"]) == {1, 10, 100}
    tanh = df[(df["estimator"] == "tanh") & (df["metric"] == "var_trace")]
    assert (tanh["value"].abs() < 1e-20).all()  # deterministic: zero variance
    assert list(tmp_path.iterdir()) == []


def test_score_can_keep_the_run_in_a_store_and_report_it(tmp_path):
    db = tmp_path / "r.sqlite"
    api.score("st", "random:widths=2-3-3,points=4,seed=2", draws=100, store=str(db), name="nb")
    paths = api.report("latest", str(db), tmp_path / "rep", ["html"])
    assert paths["html"].read_text(encoding="utf-8").count("<figure") >= 1


def test_bad_input_is_one_input_error():
    with pytest.raises(InputError, match="unknown estimator"):
        api.score("no-such", "psa-2-5-5-5", draws=10)
    with pytest.raises(InputError):
        api.problem("random:widths=2")
