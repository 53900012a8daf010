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


def test_ranking_orders_by_overall_rmse_and_keeps_failed_tasks(synthetic_run):
    run = validate(synthetic_run())
    for problem in ("toy-a", "toy-b"):
        df = tables.ranking_table(run, problem)
        tasks = run.tasks[run.tasks["problem"] == problem]
        assert len(df) == len(tasks)  # nothing dropped
        done = df[df[("", "status")] == "done"]
        rmse = done[("rel. RMSE, M=1", "all")].to_numpy()
        assert np.all(np.diff(rmse) > 0)
        assert list(done[("", "rank")]) == list(range(1, len(done) + 1))
        # every shown number is the stored one
        for _, row in done.iterrows():
            key = tasks.loc[tasks["estimator"] == row[("", "estimator")], "task_key"].iloc[0]
            assert row[("rel. RMSE, M=1", "layer1")] == _score(run, key, "layer1", "rel_rmse", 1)
            assert row[("bias plateau |b|/|g|", "head")] == _score(run, key, "head", "rel_bias")
            assert row[("whole gradient", "tr Var")] == _score(run, key, "all", "trace_var")
            assert row[("work-normalised tr Var", "x seconds")] == _score(run, key, "all", "var_x_seconds")
    df = tables.ranking_table(run, "toy-b")
    last = df.iloc[-1]
    assert last[("", "estimator")] == "reinforce" and last[("", "status")].startswith("failed: CUDA error")
    assert pd.isna(last[("", "rank")]) and np.isnan(last[("rel. RMSE, M=1", "all")])


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
