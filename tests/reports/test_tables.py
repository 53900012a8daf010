"""Report tables from synthetic stored rows: ranking, manifest, psa2020 comparison, exporters, validation."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from reports import psa2020, tables
from reports.results import ReportError, RunResults, group_order, validate
from reports.export import NA, fmt_value, latex_table, markdown_table, write_table
from reports.paper_values import M_GRID, METHOD_SPECS, VALUES, paper_table

RMSE_FACTOR, COS_SHIFT = 1.1, -0.01  # as in conftest.make_psa2020_run


def _score(run, task_key, group, metric, m=0):
    s = run.scores
    sel = s[(s["task_key"] == task_key) & (s["group"] == group) & (s["metric"] == metric) & (s["M"] == m)]
    assert len(sel) == 1
    return float(sel["value"].iloc[0])


def test_group_order_is_network_order():
    assert group_order(["head", "all", "layer10", "layer2", "layer0", "x"]) == ["layer0", "layer2", "layer10", "head",
                                                                                 "x", "all"]


SCORE = (tables.SUMMARY, tables.SCORE_M1)


def test_ranking_orders_by_the_equal_weight_score_and_keeps_failed_tasks(synthetic_run):
    run = validate(synthetic_run())
    for problem in ("toy-a", "toy-b"):
        df = tables.ranking_table(run, problem)
        tasks = run.tasks[run.tasks["problem"] == problem]
        assert len(df) == len(tasks)  # nothing dropped
        done = df[df[("", "status")] == "done"]
        assert np.all(np.diff(done[SCORE].to_numpy()) > 0)
        assert list(done[("", "rank")]) == list(range(1, len(done) + 1))
        for _, row in done.iterrows():
            key = tasks.loc[tasks["estimator"] == row[("", "estimator")], "task_key"].iloc[0]
            per_group = [_score(run, key, g, "rel_rmse", 1) for g in ("layer0", "layer1", "head")]
            assert row[SCORE] == pytest.approx(np.prod(per_group) ** (1 / 3), rel=1e-12)  # geometric mean
            # every other number shown is the stored one
            assert row[("rel. RMSE, M=1", "layer1")] == _score(run, key, "layer1", "rel_rmse", 1)
            assert row[("rel. RMSE, M=1", "whole")] == _score(run, key, "all", "rel_rmse", 1)
            head_b = _score(run, key, "head", "rel_bias")
            if row[("", "estimator")] != "reinforce":  # biased in the model: CI [b - 0.01, b + 0.01] above 0
                assert row[(tables._BIAS, "head")] == (f"{fmt_value(head_b)} [{fmt_value(head_b - 0.01)}, "
                                                       f"{fmt_value(head_b + 0.01)}]")
            assert row[("work-normalised tr Var", "x seconds")] in (0.0, _score(run, key, "all", "var_x_seconds"))
    df = tables.ranking_table(run, "toy-b")
    last = df.iloc[-1]
    assert last[("", "estimator")] == "reinforce" and last[("", "status")].startswith("failed: CUDA error")
    assert pd.isna(last[("", "rank")]) and np.isnan(last[SCORE])
    assert pd.isna(last[(tables._GROUP_RANK, "head")])


def _dominated_run(synthetic_run):
    """Two estimators: 'headfirst' is 4x better on the head (large |g|) but 5x worse on both hidden layers."""
    run = validate(synthetic_run(problems=("toy-a",), estimators=("headfirst", "balanced"), failed=(),
                                 groups=("layer0", "layer1", "head"), timings=False))
    s = run.scores
    for est, factors in (("headfirst", {"layer0": 5.0, "layer1": 5.0, "head": 0.25, "all": 0.3}),
                         ("balanced", {"layer0": 1.0, "layer1": 1.0, "head": 1.0, "all": 1.0})):
        for g, f in factors.items():
            sel = (s["estimator"] == est) & (s["group"] == g) & s["metric"].isin(["rel_rmse", "rel_bias"])
            s.loc[sel, ["value", "lo", "hi"]] *= f
    return run


def test_one_large_group_does_not_decide_the_ranking(synthetic_run):
    run = _dominated_run(synthetic_run)
    df = tables.ranking_table(run, "toy-a")
    whole = df.set_index(("", "estimator"))[("rel. RMSE, M=1", "whole")]
    assert whole["headfirst"] < whole["balanced"]  # the whole gradient is the head's
    assert list(df[("", "estimator")]) == ["balanced", "headfirst"]  # each group weighs the same
    ranks = df.set_index(("", "estimator"))[tables._GROUP_RANK]
    assert list(ranks.loc["headfirst"]) == [2, 2, 1] and list(ranks.loc["balanced"]) == [1, 1, 2]
    caption = tables.ranking_caption("toy-a", df)
    assert "geometric mean over the 3 parameter groups (layer0, layer1, head)" in caption


def test_score_at_the_work_budget(synthetic_run):
    """At the budget (BUDGET_DRAWS draws of the median-cost estimator) each estimator averages
    max(1, floor(budget / its draw time)) draws; the score is the geometric mean of sqrt(b^2 + trVar/|g|^2 / M)."""
    run = synthetic_run(problems=("toy-a",), estimators=("psa", "reinforce", "arm"), failed=(), timings=False)
    run.tasks.loc[run.tasks["estimator"] == "psa", "seconds_per_draw"] = 1.0  # slower than the whole budget
    run = validate(run)
    df = tables.ranking_table(run, "toy-a").set_index(("", "estimator"))
    spd = {"psa": 1.0, "reinforce": 5e-5, "arm": 1e-4}  # conftest.MODELS, psa slowed down
    budget = tables.BUDGET_DRAWS * 1e-4  # the median
    assert df.attrs["budget_s"] == pytest.approx(budget)
    for est, t in spd.items():
        m = max(1, int(np.floor(budget / t + 1e-9)))
        assert df.loc[est, (tables.SUMMARY, "draws in budget")] == m
        key = run.tasks.loc[run.tasks["estimator"] == est, "task_key"].iloc[0]
        want = [np.sqrt(_score(run, key, g, "rel_bias") ** 2
                        + _score(run, key, g, "trace_var") / _score(run, key, g, "grad_norm") ** 2 / m)
                for g in ("layer0", "layer1", "head")]
        assert df.loc[est, (tables.SUMMARY, tables.SCORE_BUDGET)] == pytest.approx(np.prod(want) ** (1 / 3))
    assert [df.loc[e, (tables.SUMMARY, "draws in budget")] for e in spd] == [1, 2 * tables.BUDGET_DRAWS,
                                                                              tables.BUDGET_DRAWS]
    at = df[(tables.SUMMARY, tables.SCORE_BUDGET)]
    assert list(df[("", "rank at budget")]) == list(at.rank(method="min").astype(int))
    assert "10 ms" in tables.ranking_caption("toy-a", df)


def test_bias_zero_and_variance_zero_are_shown_as_such(synthetic_run):
    assert tables.bias_text(0.05, 0.04, 0.06) == "0.05 [0.04, 0.06]"
    assert tables.bias_text(0.003, 0.0, 0.0071) == "≈0 (< 0.0071)"  # the CI reaches 0: indistinguishable
    assert tables.bias_text(np.nan, np.nan, np.nan) == NA
    assert tables.zero_if_numerical(4.95e-30, 0.22) == 0.0  # tanh's round-off
    assert tables.zero_if_numerical(1e-8, 0.22) == 1e-8
    run = validate(synthetic_run(problems=("toy-a",), estimators=("tanh", "reinforce"), failed=(), timings=False))
    s = run.scores
    s.loc[(s["estimator"] == "tanh") & (s["metric"] == "trace_var"), "value"] = 4.95e-30
    df = tables.ranking_table(run, "toy-a").set_index(("", "estimator"))
    assert df.loc["tanh", ("whole gradient", "tr Var")] == 0.0
    assert df.loc["tanh", ("work-normalised tr Var", "x seconds")] == 0.0
    assert fmt_value(df.loc["tanh", ("whole gradient", "tr Var")]) == "0"
    assert df.loc["reinforce", (tables._BIAS, "layer0")].startswith("≈0 (< ")  # model bias 0, CI [-0.01, 0.01]


@pytest.mark.parametrize("facts, marked", [
    ({"cost": {"median_s": 1e-4, "iqr_s": 5e-5, "noisy": True}}, True),
    ({"cost": {"median_s": 1e-4, "noisy": False}}, False),
    ({"cost": {}}, False), ({}, False), (None, False), ('{"cost": {"noisy": true}}', True), ("not json", False),
])
def test_noisy_cost_is_marked(synthetic_run, facts, marked):
    run = synthetic_run(problems=("toy-a",), estimators=("psa", "st"), failed=(), timings=False)
    run.tasks["facts"] = [facts, {}]
    df = tables.ranking_table(validate(run), "toy-a")
    assert ("psa †" in list(df[("", "estimator")])) == marked
    assert bool(df.attrs["notes"]) == marked
    run.tasks = run.tasks.drop(columns="facts")  # old runs: no facts at all
    assert tables.ranking_table(validate(run), "toy-a").attrs["notes"] == []


def test_labels_disambiguate_devices(synthetic_run):
    run = synthetic_run(problems=("toy-a",), estimators=("psa", "st"), failed=())
    extra = run.tasks.iloc[[0]].assign(task_key="toy-a|psa|gpu", device="cuda", dtype="float64")
    run.tasks = pd.concat([run.tasks, extra], ignore_index=True)
    labels = tables.task_labels(validate(run).tasks)
    assert labels["toy-a|psa|gpu"] == "psa [cuda float64]" and labels["toy-a|st|1"] == "st"
    assert len(set(labels.values())) == 3


def test_manifest_table_order_and_config(synthetic_run):
    run = validate(synthetic_run())
    df = tables.manifest_table(run)
    assert list(df["field"][:3]) == ["run_id", "label", "preset"]
    cfg = df.loc[df["field"] == "config", "value"].iloc[0]
    assert cfg == '{"draws": 2000, "problems": ["a", "b"]}'
    assert df.loc[df["field"] == "git_commit", "value"].iloc[0] == "0123456789abcdef"


def test_paper_values_transcription_spot_checks():
    # cells copied by hand from ``docs/protocols.md#published-values``
    assert VALUES[("chk-2000", "rel_rmse")]["Concrete-t=0.1"][0] == (113.0, 35.9, 11.3, 3.55, 1.4)
    assert VALUES[("chk-100", "rel_rmse")]["PSA"][2] == (0.436, 0.139, 0.0417, 0.0118, 0.00241)
    assert VALUES[("chk-2000", "cos_mean")]["tanh"][0] == (-0.389,) * 4
    assert VALUES[("chk-100", "cos_mean")]["ARM"][3] == (0.924, 0.992, 0.999, 1.0)
    t = paper_table()
    assert len(t) == 2 * 7 * 4 * (5 + 4)
    assert set(t["estimator"]) == set(METHOD_SPECS.values())
    assert sorted(t.loc[t["metric"] == "rel_rmse", "M"].unique()) == list(M_GRID["rel_rmse"])


@pytest.mark.parametrize("name, options, method", [
    ("concrete", {"tau": 1.0}, "Concrete-t=1"),
    ("concrete", '{"tau": 1.0}', "Concrete-t=1"),  # as a store holds them: canonical JSON
    ("concrete", {"tau": 0.1}, "Concrete-t=0.1"),
    ("concrete", {"tau": 0.5}, None),
    ("reinforce", {"baseline": "none", "decay": 0.9}, "REINFORCE"),
    ("reinforce", {"baseline": "ema", "decay": 0.5}, None),
    ("psa", {"head": "flip-mixed", "kernel": "auto"}, "PSA"),  # the paper's PSA is the flip-mixed head
    ("psa", {"head": "plain", "kernel": "eager"}, None),
    ("st-tanh", {}, None),
])
def test_method_of_reads_the_stored_options(name, options, method):
    """Tasks are matched to the paper's methods by name and stored options, never by parsing spec strings."""
    assert psa2020.method_of(name, options) == method


def test_psa2020_comparison_pairs_run_and_paper(psa2020_run):
    run = validate(psa2020_run())
    assert psa2020.is_psa2020(run)
    comp = psa2020.comparison(run)
    assert len(comp) == len(paper_table())  # every published cell has a row
    done = comp[comp["status"] == "done"]
    rm, cs = done[done["metric"] == "rel_rmse"], done[done["metric"] == "cos_mean"]
    assert (rm["run_metric"] == "rel_rmse_emp").all()
    np.testing.assert_allclose(rm["ratio"], RMSE_FACTOR, rtol=1e-9)
    np.testing.assert_allclose(cs["difference"], COS_SHIFT, atol=1e-12)
    failed = comp[comp["status"] != "done"]
    assert set(failed["method"]) == {"ARM"} and set(failed["checkpoint"]) == {"chk-2000"}
    assert failed["status"].str.startswith("failed: worker died").all() and failed["run"].isna().all()
    wide = psa2020.comparison_wide(comp, "chk-100", "rel_rmse")
    assert len(wide) == 7 * 4 and list(wide.columns[:3]) == [("", "layer"), ("", "method"), ("", "status")]
    row = wide[(wide[("", "layer")] == "layer2") & (wide[("", "method")] == "PSA")].iloc[0]
    assert row[("M=9000", "paper")] == 0.00241 and row[("M=9000", "ratio")] == pytest.approx(RMSE_FACTOR)
    assert list(psa2020.comparison_wide(comp, "chk-2000", "cos_mean").columns[-1]) == ["M=9000", "diff"]


def test_psa2020_method_not_run(psa2020_run):
    run = psa2020_run(failed=())
    keep = run.tasks["estimator"] != "arm"
    run = RunResults(run.manifest, run.tasks[keep], run.scores[run.scores["estimator"] != "arm"], run.timings)
    comp = psa2020.comparison(validate(run))
    assert (comp.loc[comp["method"] == "ARM", "status"] == "not run").all()
    assert (comp.loc[comp["method"] != "ARM", "status"] == "done").all()


def test_fmt_value():
    assert [fmt_value(v) for v in (np.nan, None, 3, 2.0, 0.123456, 12345.6, 2e7, 1e-5, True, "a|b")] == \
        [NA, NA, "3", "2", "0.123", "12346", "2e+07", "1e-05", "yes", "a|b"]


def test_markdown_latex_and_csv(tmp_path):
    df = pd.DataFrame({("", "estimator"): ["a|b", "c_d"], ("rmse", "layer0"): [0.1234567, np.nan],
                       ("rmse", "all"): [1.5, 2.0]})
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    md = markdown_table(df).splitlines()
    assert md[0] == "| estimator | rmse layer0 | rmse all |" and md[1] == "| --- | ---: | ---: |"
    assert md[2] == r"| a\|b | 0.123 | 1.5 |" and md[3] == f"| c_d | {NA} | 2 |"
    tex = latex_table(df, "A & B_1")
    assert r"\multicolumn{2}{c}{rmse}" in tex and r"c\_d" in tex and r"A \& B\_1" in tex and r"\toprule" in tex
    paths = write_table(df, tmp_path / "t", "A & B_1")
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"] and all(p.exists() for p in paths)
    back = pd.read_csv(io.StringIO(paths[0].read_text()))
    assert list(back.columns) == ["estimator", "rmse layer0", "rmse all"]
    assert back["rmse layer0"][0] == 0.1234567  # full precision in CSV


def test_timing_table_drops_empty_columns(synthetic_run):
    run = validate(synthetic_run())
    df = tables.timing_table(run)
    assert len(df) == 4 and list(df["items/s"]) == list(run.timings["items_per_s"]) and "% of peak" in df.columns
    run.timings["pct_peak"] = np.nan
    assert "% of peak" not in tables.timing_table(run).columns


@pytest.mark.parametrize("breaker, message", [
    (lambda r: RunResults(r.manifest, r.tasks.iloc[0:0], r.scores.iloc[0:0], r.timings.iloc[0:0]), "is empty"),
    (lambda r: RunResults(r.manifest, r.tasks.drop(columns="status"), r.scores, r.timings), "lacks column"),
    (lambda r: RunResults(r.manifest, r.tasks.assign(status="running"), r.scores, r.timings), "unknown task status"),
    (lambda r: RunResults(r.manifest, r.tasks.iloc[1:], r.scores, r.timings), "not in the tasks table"),
    (lambda r: RunResults(r.manifest, r.tasks, r.scores.assign(value="x"), r.timings), "non-numeric"),
    (lambda r: RunResults([], r.tasks, r.scores, r.timings), "not a dict"),
])
def test_validate_refuses_bad_runs(synthetic_run, breaker, message):
    with pytest.raises(ReportError, match=message) as info:
        validate(breaker(synthetic_run()))
    assert "\n" not in str(info.value)


def test_the_tasks_table_names_the_code_that_made_each_result(synthetic_run):
    base = synthetic_run()
    tasks = base.tasks.copy()
    tasks["estimator_origin"] = ["builtin:sbn-bench@0.1.0+src.9f2fa205cd42"] * (len(tasks) - 1) + [
        "file:/somewhere/my_est.py@" + "ab" * 32]
    run = RunResults(base.manifest, tasks, base.scores)
    code = tables.tasks_table(run)["code"].tolist()
    assert code[0] == "sbn-bench 0.1.0+src.9f2fa205cd42" and code[-1] == "my_est.py sha256 " + "ab" * 6
